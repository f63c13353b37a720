"""Validation of run requests (every error names its `param`) and the run object's shape.

The request fields are strict JSON types (a string is a string, a boolean is true or false): DRF's own
CharField would take 12 as "12" and its BooleanField "yes" as true, which the OpenAPI schema does not
allow, so a client could come to depend on what the documentation says is an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.core.validators import MaxLengthValidator
from django_stubs_ext import StrOrPromise
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer, inline_serializer
from rest_framework import serializers

from sandbox import InvalidSpec, RunSpec, all_languages, get_language, resolve_limits
from sandbox.limits import MIN_LIMITS, Limits
from sandbox.spec import MAX_ARGS, MAX_ENV_VARS, MAX_SOURCES, InputFile, SourceFile, validate_args, validate_env
from sandbox.workspace import normalize_relpath

from .errors import APIError

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_INPUT_FILES = 100
# What DRF's CharField says of U+0000 and of a lone surrogate ("\\ud800" in JSON), which UTF-8 and so
# PostgreSQL cannot hold.
NUL_MESSAGE = "Null characters are not allowed."
SURROGATE_MESSAGE_PREFIX = "Surrogate characters are not allowed"


def _too_large(what: str, limit: int, param: str) -> APIError:
    return APIError(f"'{what}' is larger than the limit of {limit} bytes.", 413, code="request_too_large", param=param)


def _spec_error(exc: InvalidSpec) -> APIError:
    return APIError(exc.message, 400, code="invalid_value", param=exc.param)


def is_unicode_text(value: str) -> bool:
    """True unless `value` holds a lone surrogate (JSON can say "\\ud800"; UTF-8, and so PostgreSQL, cannot)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def language_names() -> list[str]:
    """Every language name the API accepts (in any letter case): the languages, then their aliases."""
    languages = all_languages()
    return [lang.name for lang in languages] + sorted({alias for lang in languages for alias in lang.aliases})


class TextField(serializers.CharField):
    """A JSON string and nothing else, kept as sent (no whitespace trimming). CharField's own validators
    refuse U+0000 and lone surrogates, which neither UTF-8 nor PostgreSQL can hold."""

    default_error_messages: ClassVar[dict[str, StrOrPromise]] = {"invalid": "Must be a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class FlagField(serializers.BooleanField):
    """JSON true or false only (DRF's BooleanField also takes "yes", "0", 1, ...)."""

    default_error_messages: ClassVar[dict[str, StrOrPromise]] = {"invalid": "Must be a boolean (true or false)."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class ItemCountValidator(MaxLengthValidator):
    """At most `limit_value` entries in an object (drf-spectacular documents it as maxProperties)."""

    message = "At most %(limit_value)d entries (there are %(show_value)d)."


@extend_schema_field({"type": "string", "enum": language_names()})
class LanguageField(TextField):
    """A language name or alias; the run stores the language's own name."""


class StrictSerializer(serializers.Serializer[Any]):
    """A JSON object with only the declared keys (an unknown key names itself as the `param`)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: [f"Unrecognized request argument supplied: {unknown[0]}"]}
                )
        return super().to_internal_value(data)


class SourceFileSerializer(StrictSerializer):
    path = TextField()
    content = TextField(allow_blank=True)


class InputFileRefSerializer(StrictSerializer):
    file_id = TextField()
    path = TextField()


def _limit_field(name: str, help_text: str = "") -> serializers.IntegerField:
    low, high = getattr(MIN_LIMITS, name), getattr(settings.LIMITS_MAX, name)
    default = min(getattr(settings.LIMITS_DEFAULT, name), high)
    text = f"{help_text} Default {default}; null or absent: the default.".strip()
    if name == "cpu_ms":
        text = f"Default: timeout_ms when that is given, else {default}; null or absent: the default."
    return serializers.IntegerField(required=False, allow_null=True, min_value=low, max_value=high, help_text=text)


@extend_schema_serializer(component_name="Limits")
class LimitsRequestSerializer(StrictSerializer):
    """Requested limits: each optional, from the sandbox's minimum to the server maximum (documented only:
    `resolve_limits` validates them, with the same bounds)."""

    timeout_ms = _limit_field("timeout_ms")
    cpu_ms = _limit_field("cpu_ms")
    memory_mb = _limit_field("memory_mb")
    pids = _limit_field("pids")
    disk_mb = _limit_field("disk_mb")
    max_output_bytes = _limit_field("max_output_bytes", "Per stream (stdout and stderr each).")
    max_artifacts = _limit_field("max_artifacts")
    max_artifact_bytes = _limit_field("max_artifact_bytes")
    max_artifacts_total_bytes = _limit_field("max_artifacts_total_bytes")
    compile_timeout_ms = _limit_field("compile_timeout_ms", "Go's build step.")
    compile_memory_mb = _limit_field("compile_memory_mb", "Go's build step.")


class LimitsSerializer(serializers.Serializer[Any]):
    """The effective limits of a run (every one of them)."""

    timeout_ms = serializers.IntegerField()
    cpu_ms = serializers.IntegerField()
    memory_mb = serializers.IntegerField()
    pids = serializers.IntegerField()
    disk_mb = serializers.IntegerField()
    max_output_bytes = serializers.IntegerField(help_text="Per stream (stdout and stderr each).")
    max_artifacts = serializers.IntegerField()
    max_artifact_bytes = serializers.IntegerField()
    max_artifacts_total_bytes = serializers.IntegerField()
    compile_timeout_ms = serializers.IntegerField()
    compile_memory_mb = serializers.IntegerField()


assert (
    set(LimitsSerializer._declared_fields) == set(Limits.field_names()) == set(LimitsRequestSerializer._declared_fields)
)


class RunCreateSerializer(StrictSerializer):
    """POST /v1/runs. Unknown fields are rejected, like OpenAI's API does. Strings may not contain U+0000
    or lone surrogates."""

    language = LanguageField(
        help_text="python | node | ruby | php | go, or an alias (py, js, golang, ...); any letter case is accepted."
    )
    code = TextField(
        allow_blank=True, help_text=f"Source of the entry file, at most {settings.MAX_CODE_BYTES} bytes (UTF-8)."
    )
    sources = serializers.ListField(child=SourceFileSerializer(), required=False, max_length=MAX_SOURCES)
    stdin = TextField(required=False, allow_blank=True, default="")
    args = serializers.ListField(child=TextField(allow_blank=True), required=False, default=list, max_length=MAX_ARGS)
    env = serializers.DictField(
        child=TextField(allow_blank=True),
        required=False,
        default=dict,
        validators=[ItemCountValidator(MAX_ENV_VARS)],
        help_text="Names match ^[A-Z_][A-Z0-9_]*$; names that change how an interpreter or the loader behave "
        "(LD_*, PYTHON*, NODE_*, RUBY*, GO*, PATH, HOME, ...) are refused.",
    )
    files = serializers.ListField(child=InputFileRefSerializer(), required=False, max_length=MAX_INPUT_FILES)
    limits = LimitsRequestSerializer(required=False, allow_null=True)
    wait = FlagField(required=False, default=True)
    stream = FlagField(required=False, default=False)
    metadata = serializers.DictField(
        child=TextField(allow_blank=True, max_length=MAX_METADATA_VALUE_CHARS),
        required=False,
        default=dict,
        validators=[ItemCountValidator(MAX_METADATA_KEYS)],
        help_text=f"Echoed back: at most {MAX_METADATA_KEYS} keys of at most {MAX_METADATA_KEY_CHARS} characters.",
    )

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # Before DRF's own checks: a JSON `null` body would otherwise be "No data provided" with no code.
        if not isinstance(data, dict):
            raise APIError("The request body must be a JSON object.", code="invalid_json")
        return super().run_validation(data)

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise APIError(
                f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0], code="unknown_parameter"
            )
        code = data.get("code")
        if isinstance(code, str) and len(code.encode(errors="surrogatepass")) > settings.MAX_CODE_BYTES:
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
        if len(value.encode(errors="surrogatepass")) > settings.MAX_STDIN_BYTES:
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
        total = 0
        for i, src in enumerate(value):
            try:
                src["path"] = normalize_relpath(src["path"], param=f"sources[{i}].path")
            except InvalidSpec as exc:
                raise _spec_error(exc) from exc
            total += len(src["content"].encode(errors="surrogatepass"))
        if total > settings.MAX_SOURCES_BYTES:
            raise _too_large("sources", settings.MAX_SOURCES_BYTES, "sources")
        return value

    def validate_files(self, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, ref in enumerate(value):
            try:
                ref["path"] = normalize_relpath(ref["path"], param=f"files[{i}].path")
            except InvalidSpec as exc:
                raise _spec_error(exc) from exc
        return value

    def validate_metadata(self, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise APIError(f"Metadata keys are at most {MAX_METADATA_KEY_CHARS} characters.", param="metadata")
            if "\0" in key or not is_unicode_text(key):
                raise APIError("Metadata keys must be Unicode text without U+0000.", param="metadata")
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


def constant(value: str) -> serializers.CharField:
    """A response field that always holds `value` (the `object` of each shape).

    A pattern rather than a one-value enum: drf-spectacular would move every such enum into a component
    of its own with a made-up name (`ObjectF31Enum`).
    """
    field_class = extend_schema_field({"type": "string", "pattern": f"^{value}$"})(
        type(f"Constant_{value}", (serializers.CharField,), {})
    )
    return field_class(help_text=f'Always "{value}".')  # type: ignore[no-any-return]


def single(serializer: Any) -> Any:
    """Document a list action's answer as the one object it is (`{"object": "list", "data": [...]}`),
    not as an array of such objects, which drf-spectacular assumes for `list` actions."""
    return extend_schema_serializer(many=False)(serializer)


class UsageSerializer(serializers.Serializer[Any]):
    wall_ms = serializers.IntegerField(allow_null=True)
    cpu_ms = serializers.IntegerField(allow_null=True)
    memory_peak_bytes = serializers.IntegerField(allow_null=True)
    output_bytes = serializers.IntegerField()
    artifact_bytes = serializers.IntegerField()


class ArtifactSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    object = constant("file")
    filename = serializers.CharField()
    path = serializers.CharField(help_text="Relative to /work, e.g. outputs/plot.png")
    bytes = serializers.IntegerField()
    content_type = serializers.CharField()
    url = serializers.CharField()
    expires_at = serializers.IntegerField()


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
    object = constant("run")
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
def list_serializer(name: str, item: Any) -> Any:
    """OpenAI's list shape of `item` objects, with the cursor fields."""
    return single(
        inline_serializer(
            name,
            {
                "object": constant("list"),
                "data": serializers.ListField(child=item),
                "first_id": serializers.CharField(allow_null=True),
                "last_id": serializers.CharField(allow_null=True),
                "has_more": serializers.BooleanField(),
            },
        )
    )


RunListSerializer = list_serializer("RunList", RunSerializer())


def deleted_serializer(name: str, object_name: str) -> Any:
    """`{"id", "object", "deleted": true}` of a DELETE."""
    return inline_serializer(
        name,
        {
            "id": serializers.CharField(),
            "object": constant(object_name),
            "deleted": serializers.BooleanField(help_text="Always true."),
        },
    )


class ErrorBodySerializer(serializers.Serializer[Any]):
    message = serializers.CharField()
    type = serializers.ChoiceField(
        choices=[
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "rate_limit_error",
            "server_error",
        ]
    )
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
UsageReportSerializer = single(
    inline_serializer(
        "UsageReport",
        {
            "object": constant("usage"),
            "start": serializers.DateField(),
            "end": serializers.DateField(),
            "group_by": serializers.ChoiceField(choices=["day", "language"]),
            "data": serializers.ListField(
                child=inline_serializer(
                    "UsageRow",
                    {
                        "date": serializers.DateField(required=False, help_text="With group_by=day."),
                        "language": serializers.CharField(required=False, help_text="With group_by=language."),
                        **_COUNTERS,
                    },
                )
            ),
            "total": inline_serializer("UsageTotal", dict(_COUNTERS)),
        },
    )
)
