"""Run.attempts (claims so far) and Run.queued_at (when the run last became queued), for the janitor."""

from typing import Any

import django.utils.timezone
from django.db import migrations, models


def backfill(apps: Any, schema_editor: Any) -> None:
    Run = apps.get_model("runs", "Run")
    # Runs that already started had one attempt; a queued run has been queued since it was created.
    Run.objects.filter(started_at__isnull=False).update(attempts=1)
    Run.objects.update(queued_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_usagedaily"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="attempts",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="queued_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
