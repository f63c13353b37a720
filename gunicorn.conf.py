"""gunicorn's settings file: gunicorn reads ./gunicorn.conf.py on its own when started from this directory
(`make run`, the image's CMD, docker-compose.yml, the tests' live stack), so its command lines stay as they are.

Only what every deployment needs lives here; workers, threads and timeouts stay on the command lines.
"""

# gunicorn's own lines (start-up, worker boots and timeouts, the access log when enabled) in the service's
# log format, LOG_FORMAT (codeexec_site/logs.py).
logger_class = "codeexec_site.logs.GunicornLogger"
