"""The playground: a staff-only page at `/` and the JSON it talks to (Django session + CSRF).

The JSON endpoints call exactly what /v1/runs calls — the key's token bucket, RunCreateSerializer,
create_run (admission), render_run — for the user's playground key, so a run made here is validated,
limited, shaped and signed like one made through the API, and errors come back in the same envelope.
No API key or token ever reaches the page.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.errors import APIError, not_found
from runs.models import ApiKey, Run
from runs.pagination import paginate
from runs.ratelimit import take
from runs.render import render_run
from runs.serializers import RunCreateSerializer
from runs.services import create_run
from runs.views import event_stream_response
from sandbox import all_languages

from .examples import EXAMPLES
from .keys import find_key, get_or_create_key, key_label

LANGUAGE_TITLES = {"python": "Python", "node": "Node.js", "ruby": "Ruby", "php": "PHP", "go": "Go"}
POLL_INTERVAL_MS = 300
RECENT_RUNS = 20


def _is_staff(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and getattr(user, "is_staff", False))


def admin_change_url(run: Run) -> str:
    """The run's read-only page in the admin."""
    return reverse("admin:runs_run_change", args=[run.pk])


def _content_security_policy() -> str:
    # Program output is only ever inserted as text; this policy is the second line of defence.
    # Artifact previews load from PUBLIC_BASE_URL, which may be another origin than the page's.
    base = urlsplit(settings.PUBLIC_BASE_URL)
    artifacts_origin = f"{base.scheme}://{base.netloc}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            f"img-src 'self' {artifacts_origin}",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _page_config() -> dict[str, Any]:
    """What the script needs, as JSON in the page: languages, examples, limits, endpoint URLs."""
    limit_names = ("timeout_ms", "memory_mb")
    return {
        "languages": [
            {
                "name": lang.name,
                "title": LANGUAGE_TITLES.get(lang.name, lang.name),
                "entry_file": lang.entry_file,
                "examples": [dataclasses.asdict(e) for e in EXAMPLES.get(lang.name, [])],
            }
            for lang in all_languages()
        ],
        "limits": {
            name: {"default": getattr(settings.LIMITS_DEFAULT, name), "max": getattr(settings.LIMITS_MAX, name)}
            for name in limit_names
        },
        "urls": {
            "runs": reverse("playground:runs"),
            "run": reverse("playground:run", args=["RUN_ID"]),
            "events": reverse("playground:run-events", args=["RUN_ID"]),
            "login": f"{reverse('admin:login')}?next={reverse('playground:index')}",
        },
        "poll_interval_ms": POLL_INTERVAL_MS,
        "recent_runs": RECENT_RUNS,
    }


@never_cache
@require_safe
def index(request: HttpRequest) -> HttpResponse:
    """The playground page: staff only; anyone else is sent to the admin login (or refused)."""
    user = request.user
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not _is_staff(user):
        return render(request, "playground/forbidden.html", status=403)
    assert isinstance(user, AbstractBaseUser)
    context = {"config": _page_config(), "key_label": key_label(user)}
    response = render(request, "playground/index.html", context)
    response["Content-Security-Policy"] = _content_security_policy()
    return response


# ---- JSON endpoints -------------------------------------------------------------------------------


class PlaygroundSessionAuthentication(SessionAuthentication):
    """Django's session login; a CSRF failure answers in the API's envelope (code `csrf_failed`)."""

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise APIError(f"{exc.detail} Reload the page and try again.", 403, code="csrf_failed") from None


class IsStaffSession(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            raise APIError(
                "You are not logged in (or your session expired): log in with a staff account.",
                403,
                code="not_authenticated",
            )
        if not _is_staff(user):
            raise APIError("The playground is for staff users only.", 403, code="permission_denied")
        return True


class PlaygroundView(APIView):
    authentication_classes = (PlaygroundSessionAuthentication,)
    permission_classes = (IsStaffSession,)
    # The key's bucket is taken by hand in RunsView.post: the session user is not the key.
    throttle_classes = ()
    # The page's own endpoints, not part of the public API: kept out of /v1/openapi.json.
    schema = None

    @staticmethod
    def session_user(request: Request) -> AbstractBaseUser:
        user = request.user
        assert isinstance(user, AbstractBaseUser)  # IsStaffSession let only logged-in users through
        return user


def _check_body_size(request: Request) -> None:
    """413 from Content-Length before the body is read, as BodySizeLimitMiddleware does for /v1/."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.MAX_REQUEST_BYTES:
        raise APIError(
            f"Request body is larger than the limit of {settings.MAX_REQUEST_BYTES} bytes.",
            413,
            code="request_too_large",
        )


def _take_token(request: Request, key: ApiKey) -> None:
    """One token from the key's bucket: the same bucket and figures as KeyTokenBucketThrottle for /v1/."""
    result = take(f"key:{key.pk}", max(key.rps, 1e-6), max(key.burst, 1))
    request._request.ratelimit = (key.burst, result.remaining)  # type: ignore[attr-defined]
    if not result.allowed:
        raise exceptions.Throttled(wait=math.ceil(result.retry_after_s))


class RunsView(PlaygroundView):
    def post(self, request: Request) -> Response:
        """Create a run with the user's playground key: the body of POST /v1/runs, never waiting."""
        _check_body_size(request)
        key = get_or_create_key(self.session_user(request))
        if not key.is_usable:
            raise APIError(
                f"Your playground key '{key.label}' was deactivated or revoked by an administrator.",
                403,
                code="key_revoked",
            )
        _take_token(request, key)
        body = request.data
        if isinstance(body, dict):
            body = {**body, "wait": False}  # the page polls; a request never holds a server thread
        serializer = RunCreateSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        # The worker also streams the run's events, which the page reads from RunEventsView.
        run = create_run(key, serializer.validated_data, stream=True)
        return Response(render_run(run), status=status.HTTP_202_ACCEPTED)

    def get(self, request: Request) -> Response:
        """The user's recent playground runs, newest first (the list shape of GET /v1/runs), with
        `admin_urls` mapping each run id to its admin page."""
        key = find_key(self.session_user(request))
        queryset = (
            Run.objects.filter(owner=key).prefetch_related("artifact_files") if key is not None else Run.objects.none()
        )
        admin_urls: dict[str, str] = {}

        def render_row(run: Run) -> dict[str, Any]:
            admin_urls[run.public_id] = admin_change_url(run)
            return render_run(run)

        body = paginate(request, queryset, render_row)
        body["admin_urls"] = admin_urls
        return Response(body)


def _own_run(user: AbstractBaseUser, run_id: str) -> Run:
    """A run of the user's playground key; anything else answers 404, as another key's run does in /v1."""
    key = find_key(user)
    run = Run.objects.filter(owner=key, public_id=run_id).first() if key is not None else None
    if run is None:
        raise not_found("run", param="id")
    return run


class RunView(PlaygroundView):
    def get(self, request: Request, run_id: str) -> Response:
        """One run of the user's playground key, as GET /v1/runs/{id} renders it."""
        return Response(render_run(_own_run(self.session_user(request), run_id)))


class RunEventsView(PlaygroundView):
    def get(self, request: Request, run_id: str) -> StreamingHttpResponse:
        """The run's events as text/event-stream (what `stream: true` gives the API), for the page's
        EventSource: output appears as the program writes it. The page falls back to polling."""
        return event_stream_response(_own_run(self.session_user(request), run_id))
