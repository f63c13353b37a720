"""django_dramatiq's `rundramatiq`, with every line it and Dramatiq print in the service's log format.

django_dramatiq's command prints its plan to stdout and execs Dramatiq's CLI, whose parent process logs
in a text format of its own. This one logs the plan and execs `codeexec_site.dramatiq_cli` with the
same arguments. It takes precedence because the `codeexec_site` app comes before `django_dramatiq` in
INSTALLED_APPS.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, OutputWrapper
from django_dramatiq.management.commands.rundramatiq import Command as DjangoDramatiqCommand

log = logging.getLogger("codeexec.rundramatiq")


class _LogWriter:
    """A stdout for django_dramatiq's messages (" * Discovered tasks module: ..."): one log line each."""

    def write(self, text: str) -> int:
        message = text.strip().lstrip("* ").strip()
        if message:
            log.info("%s", message)
        return len(text)

    def flush(self) -> None:
        pass


class Command(DjangoDramatiqCommand):  # type: ignore[misc]
    help = "Runs Dramatiq workers (logging in the service's format, LOG_FORMAT)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout = OutputWrapper(_LogWriter())  # type: ignore[arg-type]
        if options["use_gevent"]:
            raise CommandError("--use-gevent is not supported by codeexec's workers")
        paths = [options["path"]] if isinstance(options["path"], str) else options["path"]
        argv = [sys.executable, "-m", "codeexec_site.dramatiq_cli", "--path", *paths]
        argv += [
            "--processes",
            str(options["processes"]),
            "--threads",
            str(options["threads"]),
            "--worker-shutdown-timeout",
            str(options["worker_shutdown_timeout"]),
        ]
        if options["watch_dir"]:
            argv += [
                "--watch",
                options["watch_dir"],
                *(["--watch-use-polling"] if options["use_polling_watcher"] else []),
            ]
        for function in options["forks"]:
            argv += ["--fork-function", function]
        argv += ["-v"] * (options["verbosity"] - 1)
        argv += self.discover_tasks_modules()
        if options["queues"]:
            argv += ["--queues", *options["queues"]]
        for flag, value in (("--pid-file", options["pid_file"]), ("--log-file", options["log_file"])):
            if value:
                argv += [flag, value]
        if options["skip_logging"]:
            argv.append("--skip-logging")
        if options["use_spawn"]:
            argv.append("--use-spawn")
        log.info("running dramatiq: %s", " ".join(argv[3:]))
        # The wrapper module is found whatever the working directory (Dramatiq's --path is relative to it).
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(settings.BASE_DIR), os.environ.get("PYTHONPATH")])),
        }
        os.execve(sys.executable, argv, env)  # noqa: S606 (an argv list, as django_dramatiq execs)
