"""Signed, expiring download links: artifacts' `url`, POST /v1/files/{id}/url, and what a link cannot do."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from files import signing
from files.models import File
from tests.api import assert_error, url_path


def _content(response) -> bytes:
    return b"".join(response.streaming_content)


def _anonymous_get(url: str):
    """Fetch a link the way a browser would: a fresh client, no Authorization header."""
    return APIClient().get(url_path(url))


def _mint(tenant, file_id: str) -> dict:
    response = tenant.client.post(f"/v1/files/{file_id}/url")
    assert response.status_code == 200, response.content
    return response.json()


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _with_query(file_id: str, **query: str) -> str:
    return f"/v1/files/{file_id}/content?{urlencode(query)}"


def _assert_attachment(response, filename: str) -> None:
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment"), disposition
    assert filename in disposition
    assert response["X-Content-Type-Options"] == "nosniff"


# ---- artifacts of a real run --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_downloads_an_artifact_without_a_key(alice, bob, worker) -> None:
    code = "import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/report.txt', 'w').write('hello artifact')\n"
    before = int(time.time())
    run = alice.post_run(code=code).json()
    after = int(time.time())
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    [artifact] = run["artifacts"]

    assert isinstance(artifact["expires_at"], int)
    ttl = settings.SIGNED_URL_TTL_S
    assert before + ttl <= artifact["expires_at"] <= after + ttl + 5
    assert artifact["url"].startswith(f"{settings.PUBLIC_BASE_URL}/v1/files/{artifact['id']}/content?")
    assert _query(artifact["url"])["expires"] == str(artifact["expires_at"])

    response = _anonymous_get(artifact["url"])
    assert response.status_code == 200
    assert _content(response) == b"hello artifact"
    assert response["Content-Type"].startswith("text/plain")
    _assert_attachment(response, "report.txt")

    # The key that owns the artifact mints fresh links for it; Bob cannot.
    minted = _mint(alice, artifact["id"])
    assert set(minted) == {"url", "expires_at"}
    assert _content(_anonymous_get(minted["url"])) == b"hello artifact"
    assert_error(bob.client.post(f"/v1/files/{artifact['id']}/url"), 404, "invalid_request_error")

    # Deleting the run deletes its artifacts: the link stops working.
    assert alice.client.delete(f"/v1/runs/{run['id']}").status_code == 200
    assert_error(_anonymous_get(artifact["url"]), 404, "invalid_request_error")


@pytest.mark.django_db(transaction=True)
def test_it_serves_html_and_svg_artifacts_as_inert_attachments(alice, worker) -> None:
    code = (
        "import os\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/page.html', 'w').write('<html><script>fetch(\"/v1/runs\")</script></html>')\n"
        "open('outputs/image.svg', 'w').write("
        "'<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(document.cookie)</script></svg>')\n"
    )
    run = alice.post_run(code=code).json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    by_name = {a["filename"]: a for a in run["artifacts"]}
    assert set(by_name) == {"page.html", "image.svg"}

    for name, body_start in (("page.html", b"<html><script>"), ("image.svg", b"<svg")):
        response = _anonymous_get(by_name[name]["url"])
        assert response.status_code == 200, name
        assert _content(response).startswith(body_start)
        _assert_attachment(response, name)
        csp = response["Content-Security-Policy"]
        assert "default-src 'none'" in csp, csp
        assert "sandbox" in csp, csp


# ---- links to uploaded files (no run needed) -----------------------------------------------------


def test_it_mints_a_link_for_an_uploaded_file(alice) -> None:
    file = alice.upload(b"a,b\n1,2\n", filename="table.csv")
    before = int(time.time())
    minted = _mint(alice, file["id"])
    assert set(minted) == {"url", "expires_at"}
    assert isinstance(minted["expires_at"], int)
    assert before + settings.SIGNED_URL_TTL_S <= minted["expires_at"] <= int(time.time()) + settings.SIGNED_URL_TTL_S
    response = _anonymous_get(minted["url"])
    assert response.status_code == 200
    assert _content(response) == b"a,b\n1,2\n"
    assert response["Content-Type"].startswith("text/csv")
    _assert_attachment(response, "table.csv")


def test_it_follows_the_ttl_setting(alice, settings) -> None:
    settings.SIGNED_URL_TTL_S = 120
    file = alice.upload(b"x")
    minted = _mint(alice, file["id"])
    assert abs(minted["expires_at"] - (time.time() + 120)) <= 5


def test_it_builds_links_on_the_public_base_url(alice, settings) -> None:
    settings.PUBLIC_BASE_URL = "https://exec.example.com/codeexec"
    file = alice.upload(b"behind a proxy")
    minted = _mint(alice, file["id"])
    assert minted["url"].startswith(f"https://exec.example.com/codeexec/v1/files/{file['id']}/content?"), minted
    # The service itself answers the same path and query.
    response = APIClient().get(f"/v1/files/{file['id']}/content?{urlsplit(minted['url']).query}")
    assert _content(response) == b"behind a proxy"


def test_it_validates_ownership_when_minting(alice, bob) -> None:
    theirs = bob.upload(b"secret")
    assert_error(alice.client.post(f"/v1/files/{theirs['id']}/url"), 404, "invalid_request_error")
    assert_error(alice.client.post("/v1/files/file-doesnotexist/url"), 404, "invalid_request_error")


def test_it_requires_a_key_to_mint(alice, anonymous) -> None:
    file = alice.upload(b"x")
    assert_error(anonymous.post(f"/v1/files/{file['id']}/url"), 401, "authentication_error")


def test_it_mints_a_new_link_each_time_that_still_works(alice, monkeypatch) -> None:
    file = alice.upload(b"x")
    first = _mint(alice, file["id"])
    now = time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 10)
    second = _mint(alice, file["id"])
    assert second["expires_at"] > first["expires_at"]
    assert second["url"] != first["url"]
    assert _anonymous_get(first["url"]).status_code == 200
    assert _anonymous_get(second["url"]).status_code == 200


# ---- what a link cannot do ------------------------------------------------------------------------


def test_it_refuses_a_tampered_signature(alice) -> None:
    file = alice.upload(b"x")
    query = _query(_mint(alice, file["id"])["url"])
    sig = query["signature"]
    tampered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    response = APIClient().get(_with_query(file["id"], expires=query["expires"], signature=tampered))
    assert_error(response, 403, "permission_error", code="invalid_signature")
    for bad in ("", "x", sig.upper() if sig.upper() != sig else sig + "0", sig[:32]):
        response = APIClient().get(_with_query(file["id"], expires=query["expires"], signature=bad))
        assert_error(response, 403, "permission_error", code="invalid_signature")


def test_it_refuses_a_changed_expiry(alice) -> None:
    file = alice.upload(b"x")
    query = _query(_mint(alice, file["id"])["url"])
    for expires in (int(query["expires"]) + 1, int(query["expires"]) + 10 * 365 * 86400, int(query["expires"]) - 1):
        response = APIClient().get(_with_query(file["id"], expires=str(expires), signature=query["signature"]))
        assert_error(response, 403, "permission_error", code="invalid_signature")
    for expires in ("soon", "", "1e99"):
        response = APIClient().get(_with_query(file["id"], expires=expires, signature=query["signature"]))
        assert_error(response, 403, "permission_error", code="invalid_signature")


def test_it_refuses_a_link_with_only_half_of_the_signature(alice) -> None:
    file = alice.upload(b"x")
    query = _query(_mint(alice, file["id"])["url"])
    assert_error(
        APIClient().get(_with_query(file["id"], expires=query["expires"])),
        403,
        "permission_error",
        code="invalid_signature",
    )
    assert_error(
        APIClient().get(_with_query(file["id"], signature=query["signature"])),
        403,
        "permission_error",
        code="invalid_signature",
    )


def test_it_refuses_a_signature_of_another_file(alice, bob) -> None:
    mine = alice.upload(b"public")
    theirs = bob.upload(b"secret")
    query = _query(_mint(alice, mine["id"])["url"])
    response = APIClient().get(_with_query(theirs["id"], **query))
    error = assert_error(response, 403, "permission_error", code="invalid_signature")
    assert "secret" not in error["message"]
    # Not with Alice's key either: her link for her file is no key to Bob's.
    assert_error(alice.client.get(_with_query(theirs["id"], **query)), 403, "permission_error")


def test_it_refuses_an_expired_link(alice) -> None:
    file = alice.upload(b"x")
    url, expires_at = signing.signed_url(file["id"], now=time.time() - 2 * settings.SIGNED_URL_TTL_S)
    assert expires_at < time.time()
    response = APIClient().get(url_path(url))
    error = assert_error(response, 403, "permission_error", code="invalid_signature")
    assert "expired" in error["message"].lower()


def test_it_refuses_a_link_once_its_time_has_passed(alice, monkeypatch) -> None:
    file = alice.upload(b"x")
    minted = _mint(alice, file["id"])
    assert _anonymous_get(minted["url"]).status_code == 200
    monkeypatch.setattr(signing.time, "time", lambda: minted["expires_at"] + 1)
    assert_error(_anonymous_get(minted["url"]), 403, "permission_error", code="invalid_signature")


def test_it_refuses_links_signed_with_another_key(alice, settings) -> None:
    file = alice.upload(b"x")
    settings.SIGNING_KEY = "another-signing-key"
    forged, _ = signing.signed_url(file["id"])
    settings.SIGNING_KEY = "the-real-signing-key"
    assert_error(APIClient().get(url_path(forged)), 403, "permission_error", code="invalid_signature")
    genuine = _mint(alice, file["id"])
    assert _anonymous_get(genuine["url"]).status_code == 200


def test_it_answers_404_for_a_deleted_file(alice) -> None:
    file = alice.upload(b"gone soon")
    minted = _mint(alice, file["id"])
    stored = File.objects.get(public_id=file["id"]).blob.name
    assert alice.client.delete(f"/v1/files/{file['id']}").status_code == 200
    assert not default_storage.exists(stored)
    assert_error(_anonymous_get(minted["url"]), 404, "invalid_request_error")


def test_it_still_requires_the_owner_key_without_a_signature(alice, bob, anonymous) -> None:
    file = alice.upload(b"private")
    path = f"/v1/files/{file['id']}/content"
    assert_error(anonymous.get(path), 401, "authentication_error")
    assert_error(bob.client.get(path), 404, "invalid_request_error")
    response = alice.client.get(path)
    assert response.status_code == 200
    assert _content(response) == b"private"


@pytest.fixture
def address_rate(settings):
    """Sets the per-address budget for requests without a valid key (UNAUTHENTICATED_RATE) from a clean
    slate, this client's address being its own (no trusted proxy)."""

    def set_rate(rate: str) -> None:
        settings.UNAUTHENTICATED_RATE = rate
        settings.TRUSTED_PROXIES = []
        cache.clear()

    yield set_rate
    cache.clear()


def test_it_does_not_count_signed_downloads_as_bad_key_attempts(alice, address_rate) -> None:
    # A chat page may load many artifact images through their links within a minute; the per-address
    # budget for missing or bad keys guards key guessing, not downloads through a valid link.
    address_rate("3/h")
    file = alice.upload(b"image bytes", filename="plot.png")
    minted = _mint(alice, file["id"])
    answers = [_anonymous_get(minted["url"]).status_code for _ in range(5)]
    assert answers == [200] * 5


def test_it_limits_bad_signed_links_per_address(alice, address_rate) -> None:
    # Guessing signatures costs time as guessing keys does; a good link is still never counted.
    address_rate("3/h")
    file = alice.upload(b"secret bytes")
    expires = str(int(time.time()) + 600)
    for _ in range(3):
        tampered = _anonymous_get(_with_query(file["id"], expires=expires, signature="0" * 64))
        assert_error(tampered, 403, "permission_error", code="invalid_signature")
    limited = _anonymous_get(_with_query(file["id"], expires=expires, signature="0" * 64))
    assert_error(limited, 429, "rate_limit_error", code="rate_limit_exceeded")


def test_it_counts_a_bad_link_once(alice, address_rate) -> None:
    # A link with an expiry but no signature is a bad link: one request, one count, not two.
    address_rate("2/h")
    file = alice.upload(b"bytes")
    answers = [_anonymous_get(_with_query(file["id"], expires="1")).status_code for _ in range(3)]
    assert answers == [403, 403, 429]


def test_a_signature_elsewhere_does_not_skip_the_missing_key_limit(address_rate) -> None:
    address_rate("2/h")
    answers = [APIClient().get("/v1/runs?signature=abc").status_code for _ in range(3)]
    assert answers == [401, 401, 429]
