"""`manage.py usage_report`: usage across all keys (or one), per key and day, as a table, CSV or JSON.

The figures come from the same SQL as GET /v1/usage, so they agree for the same range.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.db.models.functions import TruncDate

from runs.models import ApiKey
from runs.usage import STATUSES, SUMS, counters, parse_range, runs_in_range, usage, zero

COLUMNS = ["runs", *STATUSES, *SUMS]


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
        queryset = runs_in_range(start, end, key)
        rows = [
            {
                "key": row["owner__label"],
                "key_prefix": row["owner__prefix"],
                "date": row["date"].isoformat(),
                **{c: int(row[c]) for c in COLUMNS},
            }
            for row in queryset.annotate(date=TruncDate("created_at", tzinfo=dt.UTC))
            .values("owner__label", "owner__prefix", "owner_id", "date")
            .annotate(**counters())
            .order_by("owner__label", "owner_id", "date")
        ]
        total = usage(start, end, "language", key)["total"] if rows else zero()
        if options["format"] == "json":
            self.stdout.write(
                json.dumps({"start": start.isoformat(), "end": end.isoformat(), "data": rows, "total": total})
            )
        elif options["format"] == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["key", "key_prefix", "date", *COLUMNS])
            for row in rows:
                writer.writerow([row["key"], row["key_prefix"], row["date"], *(row[c] for c in COLUMNS)])
            writer.writerow(["TOTAL", "", "", *(total[c] for c in COLUMNS)])
            self.stdout.write(buffer.getvalue(), ending="")
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
