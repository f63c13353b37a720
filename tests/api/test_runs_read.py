"""GET /v1/runs/{id} and GET /v1/runs: scoping, list shape, newest first, limit/after/order, filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.models import Run
from tests.api import assert_error


def _list(tenant, **params) -> dict:
    response = tenant.client.get("/v1/runs", params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"object", "data", "first_id", "last_id", "has_more"}
    assert body["object"] == "list"
    return body


def _ids(body: dict) -> list[str]:
    return [r["id"] for r in body["data"]]


@pytest.fixture
def five_runs(alice, make_run) -> list[Run]:
    """Alice's runs, oldest first, one second apart."""
    base = timezone.now() - timedelta(minutes=5)
    return [make_run(alice.key, created_at=base + timedelta(seconds=i), stdout=f"{i}\n") for i in range(5)]


# ---- retrieve -------------------------------------------------------------------------------------


def test_it_retrieves_a_run(alice, make_run) -> None:
    run = make_run(alice.key, stdout="2\n", metadata={"a": "b"}, runtime_version="3.11.2", wall_ms=5)
    body = alice.get_run(run.public_id)
    assert body["id"] == run.public_id
    assert body["object"] == "run"
    assert body["status"] == "succeeded"
    assert body["stdout"] == "2\n"
    assert body["metadata"] == {"a": "b"}
    assert body["runtime_version"] == "3.11.2"
    assert body["usage"]["wall_ms"] == 5
    assert body["usage"]["cpu_ms"] is None  # unknown figures are null, never a guess
    assert body["created_at"] == int(run.created_at.timestamp())
    assert isinstance(body["completed_at"], int)


def test_it_validates_ownership_on_retrieve(alice, bob, make_run) -> None:
    theirs = make_run(bob.key, stdout="bob's secret\n")
    response = alice.client.get(f"/v1/runs/{theirs.public_id}")
    error = assert_error(response, 404, "invalid_request_error", code="not_found")
    assert b"secret" not in response.content
    # The answer is the same as for an id that never existed.
    missing = assert_error(alice.client.get("/v1/runs/run_aaaaaaaaaaaaaaaaaaaaaaaa"), 404, "invalid_request_error")
    assert missing == error
    assert bob.get_run(theirs.public_id)["stdout"] == "bob's secret\n"


def test_it_does_not_look_runs_up_by_internal_id(alice, make_run) -> None:
    run = make_run(alice.key)
    assert_error(alice.client.get(f"/v1/runs/{run.pk}"), 404, "invalid_request_error")


# ---- list -----------------------------------------------------------------------------------------


def test_it_lists_nothing_for_a_new_key(alice) -> None:
    assert _list(alice) == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_it_lists_newest_first(alice, five_runs) -> None:
    body = _list(alice)
    assert _ids(body) == [r.public_id for r in reversed(five_runs)]
    assert body["first_id"] == five_runs[-1].public_id
    assert body["last_id"] == five_runs[0].public_id
    assert body["has_more"] is False
    assert all(r["object"] == "run" for r in body["data"])


def test_it_lists_oldest_first_with_order_asc(alice, five_runs) -> None:
    assert _ids(_list(alice, order="asc")) == [r.public_id for r in five_runs]


def test_it_validates_ownership_in_lists(alice, bob, make_run, five_runs) -> None:
    theirs = make_run(bob.key)
    assert theirs.public_id not in _ids(_list(alice, limit=100))
    assert _ids(_list(bob)) == [theirs.public_id]
    # Another key's id is not a usable cursor either.
    assert_error(alice.client.get("/v1/runs", {"after": theirs.public_id}), 400, "invalid_request_error", param="after")


def test_it_pages_with_limit_and_after(alice, five_runs) -> None:
    newest_first = [r.public_id for r in reversed(five_runs)]
    page1 = _list(alice, limit=2)
    assert _ids(page1) == newest_first[:2]
    assert page1["has_more"] is True
    assert page1["first_id"] == newest_first[0] and page1["last_id"] == newest_first[1]
    page2 = _list(alice, limit=2, after=page1["last_id"])
    assert _ids(page2) == newest_first[2:4]
    assert page2["has_more"] is True
    page3 = _list(alice, limit=2, after=page2["last_id"])
    assert _ids(page3) == newest_first[4:]
    assert page3["has_more"] is False


def test_it_pages_in_ascending_order(alice, five_runs) -> None:
    oldest_first = [r.public_id for r in five_runs]
    page1 = _list(alice, limit=3, order="asc")
    assert _ids(page1) == oldest_first[:3]
    page2 = _list(alice, limit=3, order="asc", after=page1["last_id"])
    assert _ids(page2) == oldest_first[3:]
    assert page2["has_more"] is False


def test_it_says_has_more_false_on_an_exact_last_page(alice, five_runs) -> None:
    body = _list(alice, limit=5)
    assert len(body["data"]) == 5
    assert body["has_more"] is False


def test_it_defaults_to_twenty_and_caps_at_a_hundred(alice, make_run) -> None:
    now = timezone.now()
    Run.objects.bulk_create(
        [Run(owner=alice.key, language="python", code="", limits={}, created_at=now) for _ in range(25)]
    )
    default = _list(alice)
    assert len(default["data"]) == 20 and default["has_more"] is True
    assert len(_list(alice, limit=100)["data"]) == 25


def test_it_keeps_a_stable_order_for_equal_timestamps(alice, make_run) -> None:
    same = timezone.now()
    runs = [make_run(alice.key, created_at=same) for _ in range(6)]
    seen: list[str] = []
    after = None
    while True:
        body = _list(alice, limit=1, **({"after": after} if after else {}))
        seen += _ids(body)
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert sorted(seen) == sorted(r.public_id for r in runs)  # no duplicates, none skipped
    assert len(seen) == 6
    assert seen == _ids(_list(alice))  # the same order as one page
    asc = _ids(_list(alice, order="asc"))
    assert asc == list(reversed(seen))


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5"])
def test_it_rejects_a_bad_limit(alice, limit) -> None:
    assert_error(alice.client.get("/v1/runs", {"limit": limit}), 400, "invalid_request_error", param="limit")


def test_it_rejects_a_bad_order(alice) -> None:
    assert_error(alice.client.get("/v1/runs", {"order": "newest"}), 400, "invalid_request_error", param="order")


def test_it_rejects_an_unknown_cursor(alice) -> None:
    response = alice.client.get("/v1/runs", {"after": "run_aaaaaaaaaaaaaaaaaaaaaaaa"})
    assert_error(response, 400, "invalid_request_error", param="after")


def test_it_filters_by_status(alice, make_run) -> None:
    ok = make_run(alice.key, status="succeeded")
    bad = make_run(alice.key, status="failed", exit_code=1)
    queued = make_run(alice.key, status="queued")
    assert _ids(_list(alice, status="failed")) == [bad.public_id]
    assert _ids(_list(alice, status="queued")) == [queued.public_id]
    assert _ids(_list(alice, status="succeeded")) == [ok.public_id]
    assert _list(alice, status="oom")["data"] == []


def test_it_filters_by_language_and_accepts_aliases(alice, make_run) -> None:
    py = make_run(alice.key, language="python")
    go = make_run(alice.key, language="go")
    assert _ids(_list(alice, language="go")) == [go.public_id]
    assert _ids(_list(alice, language="python")) == [py.public_id]
    assert _ids(_list(alice, language="py")) == [py.public_id]
    assert _list(alice, language="ruby")["data"] == []


def test_it_combines_filters_with_paging(alice, make_run) -> None:
    base = timezone.now()
    wanted = [
        make_run(alice.key, language="python", status="failed", created_at=base + timedelta(seconds=i))
        for i in range(3)
    ]
    make_run(alice.key, language="python", status="succeeded", created_at=base + timedelta(seconds=10))
    make_run(alice.key, language="go", status="failed", created_at=base + timedelta(seconds=11))
    page1 = _list(alice, language="python", status="failed", limit=2)
    assert _ids(page1) == [wanted[2].public_id, wanted[1].public_id]
    assert page1["has_more"] is True
    page2 = _list(alice, language="python", status="failed", limit=2, after=page1["last_id"])
    assert _ids(page2) == [wanted[0].public_id]
    assert page2["has_more"] is False


def test_it_rejects_an_unknown_status_filter(alice) -> None:
    assert_error(alice.client.get("/v1/runs", {"status": "done"}), 400, "invalid_request_error", param="status")


def test_it_rejects_an_unknown_language_filter(alice) -> None:
    assert_error(alice.client.get("/v1/runs", {"language": "cobol"}), 400, "invalid_request_error", param="language")


@pytest.mark.django_db(transaction=True)
def test_it_lists_a_real_run_with_its_artifacts(alice, worker) -> None:
    run = alice.post_run(code="open('outputs/a.txt', 'w').write('a')\nprint('ok')").json()
    assert run["status"] == "succeeded", (run["stderr"], run["error"])
    listed = _list(alice)["data"]
    assert listed == [run]
