"""CORS (django-cors-headers): off by default; CORS_ALLOWED_ORIGINS opens the API (/v1/ only) to the
origins it names, preflights included, with the headers a browser client needs to read."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.api import assert_error

ORIGIN = "https://app.example.org"
ALLOW_ORIGIN = "access-control-allow-origin"


def _preflight(client: APIClient, path: str, origin: str = ORIGIN):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )


@pytest.fixture
def cors(settings):
    """What CORS_ALLOWED_ORIGINS=https://app.example.org gives (codeexec_site/settings.py)."""
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_URLS_REGEX = r"^/v1/"
    return settings


@pytest.mark.django_db
def test_it_grants_no_origin_by_default(alice, anonymous) -> None:
    answer = alice.client.get("/v1/runs", HTTP_ORIGIN=ORIGIN)
    assert answer.status_code == 200
    assert not answer.has_header(ALLOW_ORIGIN)
    preflight = _preflight(anonymous, "/v1/runs")
    assert not preflight.has_header(ALLOW_ORIGIN)
    assert not preflight.has_header("access-control-allow-methods")  # off is off: not answered as CORS


@pytest.mark.django_db
def test_it_lets_a_configured_origin_call_the_api_and_read_its_headers(cors, alice) -> None:
    answer = alice.client.get("/v1/runs", HTTP_ORIGIN=ORIGIN)
    assert answer.status_code == 200
    assert answer[ALLOW_ORIGIN] == ORIGIN
    assert "access-control-allow-credentials" not in {h.lower() for h in answer.headers}
    exposed = {h.strip().lower() for h in answer["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "x-ratelimit-remaining-requests", "retry-after"} <= exposed
    # Errors too: a browser client must be able to read the envelope of a refused request.
    refused = APIClient().get("/v1/runs", HTTP_ORIGIN=ORIGIN)
    assert_error(refused, 401, "authentication_error")
    assert refused[ALLOW_ORIGIN] == ORIGIN


@pytest.mark.django_db
def test_it_answers_a_preflight_without_a_key(cors, anonymous) -> None:
    answer = _preflight(anonymous, "/v1/runs")
    assert answer.status_code == 200
    assert answer[ALLOW_ORIGIN] == ORIGIN
    allowed = {h.strip().lower() for h in answer["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert "POST" in answer["access-control-allow-methods"]


@pytest.mark.django_db
def test_it_grants_nothing_to_other_origins_or_outside_the_api(cors, alice, anonymous) -> None:
    assert not alice.client.get("/v1/runs", HTTP_ORIGIN="https://evil.example").has_header(ALLOW_ORIGIN)
    assert not _preflight(anonymous, "/v1/runs", origin="https://evil.example").has_header(ALLOW_ORIGIN)
    # The admin and the playground use cookies: never shared with another origin.
    assert not anonymous.get("/admin/login/", HTTP_ORIGIN=ORIGIN).has_header(ALLOW_ORIGIN)
    assert not anonymous.get("/", HTTP_ORIGIN=ORIGIN).has_header(ALLOW_ORIGIN)


@pytest.mark.django_db
def test_a_star_opens_the_api_to_any_origin(settings, alice) -> None:
    settings.CORS_ALLOW_ALL_ORIGINS = True
    settings.CORS_URLS_REGEX = r"^/v1/"
    answer = alice.client.get("/v1/runs", HTTP_ORIGIN="https://anywhere.example")
    assert answer[ALLOW_ORIGIN] == "*"
