"""`manage.py usage_report`: usage across all keys (or one), per key and day, as a table, CSV or JSON.

The figures come from the same SQL as GET /v1/usage, so they agree for the same range.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from runs.models import ApiKey
from runs.usage import COLUMNS, csv_text, parse_range, per_key_per_day


class Command(BaseCommand):
    help = "Report run usage per key and day (UTC, dates inclusive)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="YYYY-MM-DD, default 29 days before --until")
        parser.add_argument("--until", help="YYYY-MM-DD, default today (UTC)")
        parser.add_argument("--key", help="only this key: its label or token prefix")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            start, end = parse_range(options["since"], options["until"])
        except ValueError as exc:
            _param, message = exc.args
            raise CommandError(message.replace("'start'", "--since").replace("'end'", "--until")) from None
        key = None
        if options["key"]:
            matches = list(ApiKey.objects.filter(Q(label=options["key"]) | Q(prefix=options["key"])))
            if len(matches) != 1:
                raise CommandError(
                    f"--key {options['key']!r} matches {len(matches)} keys; give a unique label or prefix"
                )
            key = matches[0]
        rows, total = per_key_per_day(start, end, key)
        for row in rows:
            del row["key_id"]
        if options["format"] == "json":
            self.stdout.write(
                json.dumps({"start": start.isoformat(), "end": end.isoformat(), "data": rows, "total": total})
            )
        elif options["format"] == "csv":
            self.stdout.write(csv_text(rows, total), ending="")
        else:
            header = ["key", "date", *COLUMNS]
            table = [[f"{r['key']} ({r['key_prefix']}…)", r["date"], *(str(r[c]) for c in COLUMNS)] for r in rows]
            table.append(["TOTAL", f"{start}..{end}", *(str(total[c]) for c in COLUMNS)])
            widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
            for line in [header, *table]:
                self.stdout.write(
                    "  ".join(
                        str(x).rjust(w) if i > 1 else str(x).ljust(w)
                        for i, (x, w) in enumerate(zip(line, widths, strict=False))
                    )
                )
