"""`manage.py janitor`: one janitor pass now (workers run it periodically; see runs/janitor.py).

Prints what it did as JSON. Sandbox leftovers are those of the host the command runs on, so run it on
a worker host (as root for the bwrap backend), or pass --skip-sandbox elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.janitor import run_janitor


class Command(BaseCommand):
    help = "Recover runs of lost workers, re-send lost messages and remove this host's sandbox leftovers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--skip-sandbox", action="store_true", help="leave this host's sandbox leftovers alone (not a worker host)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_janitor(sandbox=not options["skip_sandbox"])
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if report.skipped_cluster_steps:
            raise CommandError("another janitor pass holds the cluster lock; its run steps were skipped")
