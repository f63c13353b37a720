"""`manage.py createapikey LABEL`: make a key and print its token once (it is stored hashed)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key and print its token once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("label")
        parser.add_argument("--rps", type=float, default=10.0)
        parser.add_argument("--burst", type=int, default=20)
        parser.add_argument("--max-concurrent-runs", type=int, default=4)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rps"] <= 0 or options["burst"] < 1 or options["max_concurrent_runs"] < 1:
            raise CommandError("--rps must be > 0, --burst and --max-concurrent-runs at least 1")
        label = options["label"].strip()
        if not label or len(label) > 100:
            raise CommandError("LABEL must be 1-100 characters")
        _key, token = ApiKey.create_with_token(
            label,
            source=ApiKey.Source.CLI,
            rps=options["rps"],
            burst=options["burst"],
            max_concurrent_runs=options["max_concurrent_runs"],
        )
        self.stderr.write(f"Created key '{label}'. The token is shown only now:")
        self.stdout.write(token)
