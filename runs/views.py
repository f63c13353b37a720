"""HTTP for runs, runtimes and health: validation, scoping, shapes. Nothing else."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from . import metrics
from . import redis as cx_redis
from .auth import request_key
from .errors import APIError, envelope, not_found
from .idempotency import Idempotency
from .ids import new_run_id
from .models import Run
from .pagination import paginate
from .pagination import parameters as list_parameters
from .render import render_run
from .serializers import (
    ErrorSerializer,
    RunCreateSerializer,
    RunListSerializer,
    RunSerializer,
    UsageReportSerializer,
    constant,
    deleted_serializer,
    language_names,
    single,
)
from .services import RunWaiter, create_run, stream_events, wait_for_terminal
from .usage import parse_range, usage

CANCEL_WAIT_S = 5.0

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request (the error names the `param`)."),
    401: OpenApiResponse(ErrorSerializer, description="Missing or wrong API key."),
    404: OpenApiResponse(ErrorSerializer, description="No such object for this key."),
    429: OpenApiResponse(ErrorSerializer, description="`rate_limit_exceeded`: the key's request rate (`Retry-After`)."),
}
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255},
    OpenApiParameter.HEADER,
    description="1-255 printable characters: a retry with the same key and body returns what the first request "
    "created (409 while it is still in progress, or when the body differs).",
)
# One server-sent event as Schemathesis and other tools read `text/event-stream` with OpenAPI 3.0 (the
# schema of one event): its name and its JSON data.
RUN_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["run.created", "run.started", "run.output", "run.completed"]},
        "data": {
            "type": "string",
            "description": 'JSON: the run object, or for run.output `{"stream": "stdout"|"stderr", "data": "<text>"}`.',
        },
    },
    "required": ["event", "data"],
}


def _no_nul(public_id: str) -> bool:
    """PostgreSQL cannot compare a string holding U+0000; no id has one, so such a lookup finds nothing."""
    return "\0" not in public_id


def event_stream_response(run: Run) -> StreamingHttpResponse:
    """`stream: true`: the run's events as text/event-stream, written as they come (never buffered)."""

    def body() -> Iterator[bytes]:
        for name, data in stream_events(run, settings.RUN_WAIT_MAX_S):
            if not name:
                yield b": keep-alive\n\n"
                continue
            yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    response = StreamingHttpResponse(body(), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


class RunViewSet(viewsets.ViewSet):
    """Runs of the calling key."""

    lookup_field = "public_id"
    lookup_value_regex = "[^/]+"

    def _get(self, request: Request, public_id: str) -> Run:
        run = (
            Run.objects.filter(owner=request_key(request), public_id=public_id).first() if _no_nul(public_id) else None
        )
        if run is None:
            raise not_found("run", param="id")
        return run

    @extend_schema(
        request=RunCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            (200, "application/json"): OpenApiResponse(RunSerializer, description="The finished run (`wait: true`)."),
            (200, "text/event-stream"): OpenApiResponse(
                RUN_EVENT,
                description=(
                    "`stream: true`: server-sent events `run.created` and `run.started` (data: the run object), "
                    '`run.output` (data: `{"stream": "stdout"|"stderr", "data": "<text>"}`, in the '
                    "order produced, within the output caps) and `run.completed` (data: the final run object). "
                    "Lines starting with `:` are keep-alives. A client that disconnects does not stop the run."
                ),
            ),
            (202, "application/json"): OpenApiResponse(
                RunSerializer, description="Queued (`wait: false`) or still running after the server's maximum wait."
            ),
            413: OpenApiResponse(ErrorSerializer, description="`code`, `stdin`, `sources` or the body is too large."),
            415: OpenApiResponse(ErrorSerializer, description="The body is not application/json."),
            409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with another body, or in use."),
            **ERRORS,
            429: OpenApiResponse(ErrorSerializer, description="`rate_limit_exceeded` or `concurrency_limit_exceeded`."),
            503: OpenApiResponse(ErrorSerializer, description="`server_overloaded`: too many queued runs."),
        },
        summary="Create a run",
    )
    def create(self, request: Request) -> Response | StreamingHttpResponse:
        key = request_key(request)
        serializer = RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        idem = Idempotency.from_request(request, key, "runs", request.data)
        first_id = idem.begin() if idem else None
        wait = not data.get("stream") and data.get("wait", True) and settings.RUN_WAIT_MAX_S > 0
        with contextlib.ExitStack() as stack:
            waiter: RunWaiter | None = None
            if first_id is not None:
                run = Run.objects.filter(owner=key, public_id=first_id).first()
                if run is None:
                    raise not_found("run created under this Idempotency-Key (it was deleted)", param="Idempotency-Key")
            else:
                # Subscribed to its completion before the run exists: the new row need not be read back.
                run_id = new_run_id()
                try:
                    waiter = stack.enter_context(RunWaiter(run_id)) if wait else None
                    run = create_run(key, data, stream=bool(data.get("stream")), public_id=run_id)
                except BaseException:
                    if idem:
                        idem.abandon()
                    raise
                if idem:
                    idem.complete(run.public_id)
            if data.get("stream"):
                return event_stream_response(run)
            if waiter is not None:
                run = waiter.wait(run, settings.RUN_WAIT_MAX_S, fresh=True)
            elif wait:
                run = wait_for_terminal(run, settings.RUN_WAIT_MAX_S)
        code = status.HTTP_200_OK if run.is_terminal else status.HTTP_202_ACCEPTED
        return Response(render_run(run), status=code)

    @extend_schema(responses={200: RunSerializer, **ERRORS}, summary="Retrieve a run")
    def retrieve(self, request: Request, public_id: str) -> Response:
        return Response(render_run(self._get(request, public_id)))

    @extend_schema(
        parameters=[
            *list_parameters("run"),
            OpenApiParameter("status", str, enum=[c for c, _ in Run.StatusChoices.choices]),
            OpenApiParameter("language", str, enum=language_names(), description="A name or an alias."),
        ],
        responses={200: RunListSerializer, **ERRORS},
        summary="List runs",
    )
    def list(self, request: Request) -> Response:
        queryset = Run.objects.filter(owner=request_key(request)).prefetch_related("artifact_files")
        status_filter = request.query_params.get("status")
        if status_filter is not None:  # `status=` (empty) is no status either
            if status_filter not in Run.StatusChoices.values:
                raise APIError(f"Unknown status '{status_filter}'.", param="status")
            queryset = queryset.filter(status=status_filter)
        language = request.query_params.get("language")
        if language is not None:
            from sandbox import InvalidSpec, get_language

            try:
                queryset = queryset.filter(language=get_language(language).name)
            except InvalidSpec as exc:
                raise APIError(exc.message, param="language") from exc
        return Response(paginate(request, queryset, render_run))

    @extend_schema(
        request=None,
        responses={
            200: RunSerializer,
            409: OpenApiResponse(ErrorSerializer, description="The run already finished (`run_not_cancellable`)."),
            **ERRORS,
        },
        summary="Cancel a run",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, public_id: str) -> Response:
        run = self._get(request, public_id)
        if run.cancel_if_queued():
            run.refresh_from_db()
            metrics.run_finished(run)
            return Response(render_run(run))
        if run.request_cancel():
            cx_redis.publish_cancel(run.public_id)
            run = wait_for_terminal(run, CANCEL_WAIT_S)
            return Response(render_run(run))
        run.refresh_from_db()
        raise APIError(
            f"Run {run.public_id} is {run.status} and cannot be cancelled.", 409, code="run_not_cancellable", param="id"
        )

    @extend_schema(
        responses={
            200: deleted_serializer("RunDeleted", "run"),
            409: OpenApiResponse(ErrorSerializer, description="The run is still queued or running."),
            **ERRORS,
        },
        summary="Delete a finished run and its artifacts",
    )
    def destroy(self, request: Request, public_id: str) -> Response:
        run = self._get(request, public_id)
        if not run.is_terminal:
            raise APIError(
                f"Run {run.public_id} is {run.status}; cancel it or wait until it finishes.",
                409,
                code="run_not_finished",
                param="id",
            )
        blobs = [f.blob for f in run.artifact_files.all()]
        with transaction.atomic():
            run.artifact_files.all().delete()
            run.delete()
        for blob in blobs:
            blob.delete(save=False)
        return Response({"id": public_id, "object": "run", "deleted": True})


RuntimeSerializer = inline_serializer(
    "Runtime",
    {
        "object": constant("runtime"),
        "language": serializers.CharField(),
        "version": serializers.CharField(),
        "aliases": serializers.ListField(child=serializers.CharField()),
        "entry_file": serializers.CharField(),
        "compiled": serializers.BooleanField(),
        "packages": serializers.ListField(child=serializers.CharField()),
    },
)


class RuntimesViewSet(viewsets.ViewSet):
    @extend_schema(
        responses={
            200: single(
                inline_serializer(
                    "RuntimeList",
                    {
                        "object": constant("list"),
                        "data": serializers.ListField(child=RuntimeSerializer),
                    },
                )
            ),
            401: ERRORS[401],
            429: ERRORS[429],
            503: OpenApiResponse(ErrorSerializer, description="No worker has reported its runtimes yet."),
        },
        summary="List the languages and the versions that really run",
    )
    def list(self, request: Request) -> Response:
        from sandbox import all_languages

        versions: dict[str, str] = {}
        for worker in cx_redis.live_workers():
            if worker.get("ok") and worker.get("backend") == settings.SANDBOX_BACKEND and worker.get("versions"):
                versions = worker["versions"]
                break
        if not versions:
            raise APIError(
                "No sandbox worker is available to report runtime versions.",
                503,
                code="no_worker_available",
                headers={"Retry-After": "5"},
            )
        data = [
            {
                "object": "runtime",
                "language": lang.name,
                "version": versions.get(lang.name, "unavailable"),
                "aliases": list(lang.aliases),
                "entry_file": lang.entry_file,
                "compiled": lang.compiled,
                "packages": list(lang.packages),
            }
            for lang in all_languages()
        ]
        return Response({"object": "list", "data": data})


class UsageViewSet(viewsets.ViewSet):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "start", OpenApiTypes.DATE, description="YYYY-MM-DD (UTC, inclusive); default 29 days before end"
            ),
            OpenApiParameter("end", OpenApiTypes.DATE, description="YYYY-MM-DD (UTC, inclusive); default today"),
            OpenApiParameter(
                "group_by", {"type": "string", "enum": ["day", "language"], "default": "day"}, description="default day"
            ),
        ],
        responses={200: UsageReportSerializer, **ERRORS},
        summary="Usage of the calling key, aggregated per day or per language",
    )
    def list(self, request: Request) -> Response:
        group_by = request.query_params.get("group_by", "day")
        if group_by not in ("day", "language"):
            raise APIError("'group_by' must be 'day' or 'language'.", param="group_by")
        for param in ("start", "end"):
            if request.query_params.get(param) == "":  # present but empty is not a date (absent is the default)
                raise APIError(f"'{param}' must be a date as YYYY-MM-DD.", param=param)
        try:
            start, end = parse_range(request.query_params.get("start"), request.query_params.get("end"))
        except ValueError as exc:
            param, message = exc.args
            raise APIError(message, param=param) from None
        except OverflowError:  # the default start would be before 0001-01-01
            raise APIError("'end' is too early for the default range; give 'start' too.", param="end") from None
        if end == dt.date.max:  # the range ends at the start of the next day, which does not exist
            raise APIError(f"'end' must be before {dt.date.max.isoformat()}.", param="end")
        return Response(usage(start, end, group_by, key=request_key(request)))


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive (readiness, which checks dependencies, is /readyz)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Database, broker and a worker whose sandbox backend passed its self-test."""
    checks: dict[str, Any] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        cx_redis.client().ping()
        checks["broker"] = "ok"
        workers = [w for w in cx_redis.live_workers() if w.get("backend") == settings.SANDBOX_BACKEND]
        good = [w for w in workers if w.get("ok")]
        if good:
            checks["sandbox"] = "ok"
        elif workers:
            checks["sandbox"] = f"error: {workers[0].get('error') or 'self-test failed'}"
        else:
            checks["sandbox"] = "error: no worker has reported in"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
        checks["sandbox"] = "unknown"
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not ok:  # the error envelope too, like every other error answer
        failing = ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
        code = "database_unavailable" if checks["database"] != "ok" else "service_unavailable"
        body.update(envelope(f"Not ready: {failing}.", 503, code))
    return JsonResponse(body, status=200 if ok else 503)
