"""Validation of run requests (every error names its `param`) and the run object's shape."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from sandbox import InvalidSpec, RunSpec, get_language, resolve_limits
from sandbox.spec import MAX_SOURCES, InputFile, SourceFile, validate_args, validate_env
from sandbox.workspace import normalize_relpath

from .errors import APIError

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_INPUT_FILES = 100


def _too_large(what: str, limit: int, param: str) -> APIError:
    return APIError(f"'{what}' is larger than the limit of {limit} bytes.", 413, code="request_too_large", param=param)


def _spec_error(exc: InvalidSpec) -> APIError:
    return APIError(exc.message, 400, code="invalid_value", param=exc.param)


class SourceFileSerializer(serializers.Serializer[Any]):
    path = serializers.CharField(trim_whitespace=False)
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class InputFileRefSerializer(serializers.Serializer[Any]):
    file_id = serializers.CharField()
    path = serializers.CharField(trim_whitespace=False)


class LimitsSerializer(serializers.Serializer[Any]):
    timeout_ms = serializers.IntegerField(required=False)
    cpu_ms = serializers.IntegerField(required=False)
    memory_mb = serializers.IntegerField(required=False)
    pids = serializers.IntegerField(required=False)
    disk_mb = serializers.IntegerField(required=False)
    max_output_bytes = serializers.IntegerField(required=False, help_text="Per stream (stdout and stderr each).")
    max_artifacts = serializers.IntegerField(required=False)
    max_artifact_bytes = serializers.IntegerField(required=False)
    max_artifacts_total_bytes = serializers.IntegerField(required=False)
    compile_timeout_ms = serializers.IntegerField(required=False)
    compile_memory_mb = serializers.IntegerField(required=False)


class RunCreateSerializer(serializers.Serializer[Any]):
    """POST /v1/runs. Unknown fields are rejected, like OpenAI's API does."""

    language = serializers.CharField(help_text="python | node | ruby | php | go (aliases py, js, golang, ...)")
    code = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="Source of the entry file.")
    sources = SourceFileSerializer(many=True, required=False)
    stdin = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    args = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False, default=list
    )
    env = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False, default=dict
    )
    files = InputFileRefSerializer(many=True, required=False)
    limits = LimitsSerializer(required=False)
    wait = serializers.BooleanField(required=False, default=True)
    stream = serializers.BooleanField(required=False, default=False)
    metadata = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False, default=dict
    )

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise APIError("The request body must be a JSON object.", code="invalid_json")
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise APIError(
                f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0], code="unknown_parameter"
            )
        code = data.get("code")
        if isinstance(code, str) and len(code.encode()) > settings.MAX_CODE_BYTES:
            raise _too_large("code", settings.MAX_CODE_BYTES, "code")
        limits = data.get("limits")
        if limits is not None and not isinstance(limits, dict):
            raise APIError("'limits' must be an object.", param="limits")
        # Limits are checked by the sandbox's own rules so names, types and ranges agree everywhere.
        try:
            resolved = resolve_limits(limits or {}, settings.LIMITS_DEFAULT, settings.LIMITS_MAX)
        except InvalidSpec as exc:
            raise _spec_error(exc) from exc
        value = super().to_internal_value({k: v for k, v in data.items() if k != "limits"})
        value["limits"] = resolved
        return value

    def validate_language(self, value: str) -> str:
        try:
            return get_language(value).name
        except InvalidSpec as exc:
            raise _spec_error(exc) from exc

    def validate_stdin(self, value: str) -> str:
        if len(value.encode()) > settings.MAX_STDIN_BYTES:
            raise _too_large("stdin", settings.MAX_STDIN_BYTES, "stdin")
        return value

    def validate_args(self, value: list[str]) -> list[str]:
        try:
            validate_args(value)
        except InvalidSpec as exc:
            raise _spec_error(exc) from exc
        return value

    def validate_env(self, value: dict[str, str]) -> dict[str, str]:
        try:
            validate_env(value)
        except InvalidSpec as exc:
            raise _spec_error(exc) from exc
        return value

    def validate_sources(self, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if len(value) > MAX_SOURCES:
            raise APIError(f"At most {MAX_SOURCES} source files.", param="sources")
        total = 0
        for i, src in enumerate(value):
            try:
                src["path"] = normalize_relpath(src["path"], param=f"sources[{i}].path")
            except InvalidSpec as exc:
                raise _spec_error(exc) from exc
            total += len(src["content"].encode())
        if total > settings.MAX_SOURCES_BYTES:
            raise _too_large("sources", settings.MAX_SOURCES_BYTES, "sources")
        return value

    def validate_files(self, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if len(value) > MAX_INPUT_FILES:
            raise APIError(f"At most {MAX_INPUT_FILES} input files.", param="files")
        for i, ref in enumerate(value):
            try:
                ref["path"] = normalize_relpath(ref["path"], param=f"files[{i}].path")
            except InvalidSpec as exc:
                raise _spec_error(exc) from exc
        return value

    def validate_metadata(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_KEYS:
            raise APIError(f"At most {MAX_METADATA_KEYS} metadata keys.", param="metadata")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise APIError(f"Metadata keys are at most {MAX_METADATA_KEY_CHARS} characters.", param="metadata")
            if len(item) > MAX_METADATA_VALUE_CHARS:
                raise APIError(
                    f"Metadata values are at most {MAX_METADATA_VALUE_CHARS} characters.", param=f"metadata.{key}"
                )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The sandbox's own checks across fields (entry file vs sources, input path clashes), so a
        client's mistake is a 400 here and never an error of the run later."""
        spec = RunSpec(
            language=attrs["language"],
            code=attrs["code"],
            sources=[SourceFile(s["path"], s["content"]) for s in attrs.get("sources") or []],
            args=attrs.get("args", []),
            env=attrs.get("env", {}),
            files=[InputFile.from_bytes(r["path"], b"") for r in attrs.get("files") or []],
            limits=attrs["limits"],
        )
        try:
            spec.validate()
        except InvalidSpec as exc:
            raise _spec_error(exc) from exc
        return attrs


# ---- response shapes (for the OpenAPI schema; rendering is done by runs.render) -----------------


class UsageSerializer(serializers.Serializer[Any]):
    wall_ms = serializers.IntegerField(allow_null=True)
    cpu_ms = serializers.IntegerField(allow_null=True)
    memory_peak_bytes = serializers.IntegerField(allow_null=True)
    output_bytes = serializers.IntegerField()
    artifact_bytes = serializers.IntegerField()


class ArtifactSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = serializers.CharField(default="file")
    filename = serializers.CharField()
    path = serializers.CharField(help_text="Relative to /work, e.g. outputs/plot.png")
    bytes = serializers.IntegerField()
    content_type = serializers.CharField()
    url = serializers.CharField()
    expires_at = serializers.IntegerField(allow_null=True)


class RunErrorSerializer(serializers.Serializer[Any]):
    code = serializers.ChoiceField(
        choices=[
            "compile_error",
            "wall_timeout",
            "cpu_timeout",
            "memory_limit",
            "cancelled",
            "sandbox_error",
            "worker_lost",
            "storage_error",
        ]
    )
    message = serializers.CharField()


class RunSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = serializers.CharField(default="run")
    created_at = serializers.IntegerField()
    started_at = serializers.IntegerField(allow_null=True)
    completed_at = serializers.IntegerField(allow_null=True)
    language = serializers.CharField()
    runtime_version = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(
        choices=["queued", "running", "succeeded", "failed", "timeout", "oom", "cancelled", "error"]
    )
    exit_code = serializers.IntegerField(allow_null=True)
    signal = serializers.CharField(allow_null=True)
    stdout = serializers.CharField()
    stderr = serializers.CharField()
    stdout_truncated = serializers.BooleanField()
    stderr_truncated = serializers.BooleanField()
    limits = LimitsSerializer()
    usage = UsageSerializer()
    artifacts = ArtifactSerializer(many=True)
    error = RunErrorSerializer(allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField())


# `data` cannot be a declared field (it is Serializer.data), hence inline_serializer.
RunListSerializer = inline_serializer(
    "RunList",
    {
        "object": serializers.CharField(default="list"),
        "data": serializers.ListField(child=RunSerializer()),
        "first_id": serializers.CharField(allow_null=True),
        "last_id": serializers.CharField(allow_null=True),
        "has_more": serializers.BooleanField(),
    },
)


class DeletedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = serializers.CharField()
    deleted = serializers.BooleanField()


class ErrorBodySerializer(serializers.Serializer[Any]):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorBodySerializer()


_COUNTERS = {
    name: serializers.IntegerField()
    for name in (
        "runs",
        "succeeded",
        "failed",
        "timeout",
        "oom",
        "cancelled",
        "error",
        "cpu_ms",
        "wall_ms",
        "output_bytes",
        "artifact_bytes",
    )
}
UsageReportSerializer = inline_serializer(
    "UsageReport",
    {
        "object": serializers.CharField(default="usage"),
        "start": serializers.DateField(),
        "end": serializers.DateField(),
        "group_by": serializers.ChoiceField(choices=["day", "language"]),
        "data": serializers.ListField(
            child=inline_serializer(
                "UsageRow",
                {
                    "date": serializers.DateField(required=False),
                    "language": serializers.CharField(required=False),
                    **_COUNTERS,
                },
            )
        ),
        "total": inline_serializer("UsageTotal", dict(_COUNTERS)),
    },
)
