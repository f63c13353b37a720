"""`manage.py retention`: roll daily usage up, then delete expired runs, artifacts and uploads.

The same work as the janitor's periodic job (runs.retention.run_retention), for operators and cron.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from runs.retention import rollup_usage, run_retention


class Command(BaseCommand):
    help = (
        "Roll up usage of finished UTC days, then delete runs older than RUN_RETENTION_DAYS (with their "
        "artifacts) and uploads older than FILE_RETENTION_DAYS."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="report what would happen; change nothing")
        parser.add_argument("--rollup-only", action="store_true", help="roll usage up; delete nothing")
        parser.add_argument("--format", choices=["text", "json"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rollup_only"] and not options["dry_run"]:
            counts = {"rolled_up_days": rollup_usage()}
        else:
            counts = run_retention(dry_run=options["dry_run"])
            if options["rollup_only"]:
                counts = {"rolled_up_days": counts["rolled_up_days"]}
        if options["format"] == "json":
            self.stdout.write(json.dumps({"dry_run": options["dry_run"], **counts}))
            return
        verb = "would be" if options["dry_run"] else "were"
        self.stdout.write(f"{counts['rolled_up_days']} day(s) of usage {verb} rolled up.")
        if "runs" not in counts:
            return
        keep_runs = f"{settings.RUN_RETENTION_DAYS} days" if settings.RUN_RETENTION_DAYS else "forever"
        keep_files = f"{settings.FILE_RETENTION_DAYS} days" if settings.FILE_RETENTION_DAYS else "forever"
        self.stdout.write(
            f"{counts['runs']} run(s) from {counts['days']} day(s) and {counts['artifacts']} artifact(s) {verb} "
            f"deleted (runs kept {keep_runs}); {counts['files']} uploaded file(s) {verb} deleted (kept "
            f"{keep_files}); {counts['blobs']} stored blob(s) {verb} removed."
        )
