"""Dramatiq's command line with the service's log format: `python -m codeexec_site.dramatiq_cli <dramatiq args>`.

Dramatiq's CLI formats its own lines (`logging.basicConfig` with a text format) in the parent process,
which never loads Django. Configuring the root logger first makes that call a no-op, so the parent's
lines (start, signals, a worker that died) are JSON as well. Worker processes are forked from here and
then load Django, whose LOGGING (the same format) takes over; `manage.py rundramatiq` starts this.
"""

from __future__ import annotations

import logging.config
import os
import sys

from codeexec_site.logs import log_format, logging_config


def main() -> int:
    logging.config.dictConfig(logging_config(log_format(), os.environ.get("LOG_LEVEL", "INFO")))
    logging.captureWarnings(True)
    from dramatiq.cli import main as dramatiq_main

    return int(dramatiq_main() or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
