"""Uploaded files and run artifacts, stored through Django's storage API."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from runs.ids import new_file_id
from runs.models import ApiKey, Run


def storage_path(instance: File, filename: str) -> str:
    # The stored name never contains the client's filename: no traversal, no collisions.
    return f"files/{instance.public_id[5:7]}/{instance.public_id}"


class File(models.Model):
    class Purpose(models.TextChoices):
        ASSISTANTS = "assistants"
        BATCH = "batch"
        FINE_TUNE = "fine-tune"
        VISION = "vision"
        USER_DATA = "user_data"
        EVALS = "evals"
        RUN_ARTIFACT = "run_artifact"

    public_id = models.CharField(max_length=40, unique=True, default=new_file_id, editable=False)
    owner = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="files")
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField()
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    sha256 = models.CharField(max_length=64)
    blob = models.FileField(upload_to=storage_path, max_length=255)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="artifact_files")
    path = models.CharField(max_length=1024, blank=True, default="", help_text="Artifact path relative to /work")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="file_owner_created"),
            models.Index(fields=["owner", "purpose", "-created_at", "-id"], name="file_owner_purpose"),
        ]

    def __str__(self) -> str:
        return self.public_id
