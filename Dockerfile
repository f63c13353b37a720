# codeexec service image: the web (gunicorn) and the worker (rundramatiq) of docker-compose.yml.
# Python 3.11 from Debian bookworm; the service's own packages in a virtualenv at /opt/venv.
# The sandboxed languages are NOT here: with SANDBOX_BACKEND=docker each run gets a runner image.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates libseccomp2 util-linux \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# .build/pip-ca.crt exists only when scripts/build-images.sh found that this host's pip trusts an
# extra CA (a TLS-intercepting proxy); `cr[t]` lets the COPY succeed without it.
COPY requirements.txt .build/pip-ca.cr[t] /tmp/pip/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      $(test -f /tmp/pip/pip-ca.crt && echo --cert /tmp/pip/pip-ca.crt) -r /tmp/pip/requirements.txt \
 && rm -rf /tmp/pip
COPY . /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DATA_DIR=/var/lib/codeexec PORT=8080
EXPOSE 8080
# Overridden per service in docker-compose.yml; alone, the image serves the API.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn codeexec_site.wsgi -b 0.0.0.0:${PORT} -k gthread --workers ${WEB_WORKERS:-2} --threads ${WEB_THREADS:-16} --timeout 200 --graceful-timeout 30"]
