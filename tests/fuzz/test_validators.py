"""Hypothesis properties of the request validators: whatever JSON a client sends, the answer is either an
accepted request that means what was sent, or a clean error in OpenAI's envelope naming the offending
`param` (status 400 or 413); never another exception.

Pure validators run without the database; the ones behind a query (pagination, usage, negotiation)
go through the API with the test database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import unicodedata
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import exceptions
from rest_framework.test import APIRequestFactory

from runs.errors import APIError, _first_validation_error, api_exception_handler
from runs.idempotency import MAX_KEY_CHARS, Idempotency, fingerprint
from runs.models import ApiKey, Run
from runs.serializers import (
    MAX_INPUT_FILES,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_CHARS,
    RunCreateSerializer,
    language_names,
)
from runs.usage import MAX_RANGE_DAYS, parse_range
from sandbox import InvalidSpec, all_languages, get_language, resolve_limits
from sandbox.limits import MIN_LIMITS, Limits
from sandbox.spec import ENV_DENIED_NAMES, ENV_DENIED_PREFIXES, MAX_ARGS, MAX_ENV_VARS, MAX_SOURCES
from sandbox.workspace import MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_PATH_BYTES, normalize_relpath
from tests.api.conftest import Tenant

# Deterministic for CI; no example database written into the work tree.
PROPERTY = hypothesis_settings(derandomize=True, database=None, deadline=None, max_examples=150)
THROUGH_THE_API = hypothesis_settings(
    PROPERTY, max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
LIMIT_NAMES = Limits.field_names()

# ---- strategies ----------------------------------------------------------------------------------------

# Any text a JSON document can carry: NUL, control characters, and lone surrogates ("\ud800").
ANY_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec=None, categories=None), max_size=6),
    st.sampled_from(["", "\x00", "\ud800", "python", "a/../b", "main.py", "PATH", "run_x", "file-x", " "]),
)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        ANY_TEXT,
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=10,
)
# What a URL can carry (UTF-8: no lone surrogates).
QUERY_TEXT = ANY_TEXT.filter(lambda t: t.encode(errors="replace").decode() == t)
# Text the API accepts: no U+0000 (utf-8 codec: no lone surrogates).
CLEAN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
COMPONENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,11}", fullmatch=True).filter(lambda c: c not in (".", ".."))
ENTRY_FILES = {lang.entry_file.casefold() for lang in all_languages()}


def _rel_path(top_level: str | None = None) -> st.SearchStrategy[str]:
    parts = st.lists(COMPONENT, min_size=1, max_size=3)
    if top_level is not None:
        return parts.map(lambda p: "/".join([top_level, *p]))
    return parts.map("/".join).filter(lambda p: p.split("/")[0] not in ("inputs", "outputs"))


def _limit_values() -> st.SearchStrategy[dict[str, int | None]]:
    return st.fixed_dictionaries(
        {},
        optional={
            name: st.none()
            | st.integers(min_value=getattr(MIN_LIMITS, name), max_value=getattr(settings.LIMITS_MAX, name))
            for name in LIMIT_NAMES
        },
    )


ENV_NAME = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda n: n not in ENV_DENIED_NAMES and not n.startswith(ENV_DENIED_PREFIXES)
)
# A valid value of each field of POST /v1/runs.
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "language": st.sampled_from(language_names()),
    "code": CLEAN_TEXT,
    "sources": st.lists(
        st.fixed_dictionaries(
            {"path": _rel_path().filter(lambda p: p.casefold() not in ENTRY_FILES), "content": CLEAN_TEXT}
        ),
        max_size=4,
        unique_by=lambda s: s["path"].casefold(),
    ),
    "stdin": CLEAN_TEXT,
    "args": st.lists(CLEAN_TEXT, max_size=5),
    "env": st.dictionaries(ENV_NAME, CLEAN_TEXT, max_size=5),
    # Each input under a top directory of its own: unique, and no file is another's directory.
    "files": st.lists(st.tuples(CLEAN_TEXT.filter(bool), _rel_path()), max_size=4).map(
        lambda refs: [{"file_id": fid, "path": f"d{i}/{path}"} for i, (fid, path) in enumerate(refs)]
    ),
    "limits": _limit_values() | st.none(),
    "wait": st.booleans(),
    "stream": st.booleans(),
    "metadata": st.dictionaries(
        CLEAN_TEXT.filter(lambda k: len(k) <= MAX_METADATA_KEY_CHARS), CLEAN_TEXT, max_size=MAX_METADATA_KEYS
    ),
}
REQUIRED = ("language", "code")


@st.composite
def run_bodies(draw: st.DrawFn, arbitrary: bool) -> tuple[dict[str, Any], set[str]]:
    """A POST /v1/runs body and the names of its fields that are not from VALID_FIELDS."""
    body: dict[str, Any] = {}
    wild: set[str] = set()
    for name, valid in VALID_FIELDS.items():
        if name not in REQUIRED and not draw(st.booleans()):
            continue
        if arbitrary and draw(st.integers(0, 3)) == 0:
            body[name] = draw(JSON)
            wild.add(name)
        else:
            body[name] = draw(valid)
    if arbitrary and draw(st.integers(0, 5)) == 0:
        extra = draw(ANY_TEXT.filter(lambda k: k not in VALID_FIELDS))
        body[extra] = draw(JSON)
        wild.add(extra)
    if arbitrary and draw(st.integers(0, 9)) == 0:
        dropped = draw(st.sampled_from(REQUIRED))
        del body[dropped]
        wild.add(dropped)
    return body, wild


def _root(param: str) -> str:
    """`sources[1].path` -> `sources`, `env.NAME` -> `env`."""
    return re.match(r"[^.\[]*", param).group(0)  # type: ignore[union-attr]


def _validate(body: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
    """(validated data, None, 200) or (None, the error envelope's `error`, status) as the API would answer."""
    serializer = RunCreateSerializer(data=body)
    try:
        serializer.is_valid(raise_exception=True)
    except (APIError, exceptions.ValidationError) as exc:
        response = api_exception_handler(exc, {"view": None})
        assert response is not None
        assert set(response.data) == {"error"}, response.data
        error = response.data["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error
        return None, error, response.status_code
    return dict(serializer.validated_data), None, 200


def _expected_limits(requested: dict[str, Any] | None) -> dict[str, int]:
    given = {k: v for k, v in (requested or {}).items() if v is not None}
    expected = {n: min(getattr(settings.LIMITS_DEFAULT, n), getattr(settings.LIMITS_MAX, n)) for n in LIMIT_NAMES}
    if "timeout_ms" in given and "cpu_ms" not in given:
        expected["cpu_ms"] = min(given["timeout_ms"], settings.LIMITS_MAX.cpu_ms)
    return {**expected, **given}


# ---- POST /v1/runs ------------------------------------------------------------------------------------


@PROPERTY
@given(run_bodies(arbitrary=False))
def test_valid_run_requests_are_accepted_as_sent(drawn: tuple[dict[str, Any], set[str]]) -> None:
    body, _ = drawn
    data, error, status = _validate(body)
    assert error is None and status == 200, (error, body)
    assert data is not None
    assert data["language"] == get_language(body["language"]).name
    assert data["code"] == body["code"]
    assert data["stdin"] == body.get("stdin", "")
    assert data["args"] == body.get("args", [])
    assert data["env"] == body.get("env", {})
    assert data["metadata"] == body.get("metadata", {})
    assert data["wait"] is body.get("wait", True) and data["stream"] is body.get("stream", False)
    assert [dict(s) for s in data.get("sources", [])] == body.get("sources", [])
    assert [dict(f) for f in data.get("files", [])] == body.get("files", [])
    assert data["limits"].as_dict() == _expected_limits(body.get("limits"))


@PROPERTY
@given(run_bodies(arbitrary=True))
@example(({"language": "python", "code": "x", "limits": {"memory_mb": 2**64}}, {"limits"}))
@example(({"language": "python", "code": "\ud800" * 3}, {"code"}))
@example(({"language": "python", "code": "", "metadata": {"\x00": ""}}, {"metadata"}))
@example(({"language": "python", "code": "", "sources": [{"path": "a", "content": "", "x": 1}]}, {"sources"}))
@example(({"language": "python", "code": "", "wait": "true"}, {"wait"}))
def test_any_run_request_is_accepted_or_names_what_is_wrong(drawn: tuple[dict[str, Any], set[str]]) -> None:
    body, wild = drawn
    data, error, status = _validate(body)
    if error is not None:
        assert status in (400, 413), (status, error)
        assert error["type"] == "invalid_request_error", error
        # The error is about one of the fields that was not drawn valid (or a missing required one).
        assert error["param"] is not None and _root(error["param"]) in wild, (error, body, wild)
        return
    assert data is not None
    limits = data["limits"].as_dict()
    for name in LIMIT_NAMES:
        assert getattr(MIN_LIMITS, name) <= limits[name] <= getattr(settings.LIMITS_MAX, name), (name, limits)
    assert limits == _expected_limits(body.get("limits"))
    for name in ("code", "stdin"):
        assert data.get(name, "") == body.get(name, ""), name
    assert data["wait"] is body.get("wait", True) and data["stream"] is body.get("stream", False)
    for value in (data["code"], data["stdin"], *data["args"], *data["env"].values(), *data["metadata"].values()):
        assert isinstance(value, str) and "\x00" not in value
        value.encode()  # stored as UTF-8 text: no lone surrogates


@PROPERTY
@given(JSON)
def test_a_body_that_is_not_an_object_is_a_400(body: Any) -> None:
    assume(not isinstance(body, dict))
    _, error, status = _validate(body)
    assert status == 400 and error is not None and error["code"] == "invalid_json"


# ---- limits --------------------------------------------------------------------------------------------


@st.composite
def operator_limits(draw: st.DrawFn) -> tuple[Limits, Limits]:
    """Maximums at or above the sandbox minimums, and defaults that may exceed them (the operator's
    mistake that resolve_limits caps)."""
    maximums = {n: draw(st.integers(getattr(MIN_LIMITS, n), 2 * getattr(settings.LIMITS_MAX, n))) for n in LIMIT_NAMES}
    defaults = {n: draw(st.integers(getattr(MIN_LIMITS, n), 2 * maximums[n])) for n in LIMIT_NAMES}
    return Limits(**defaults), Limits(**maximums)


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(LIMIT_NAMES) | ANY_TEXT, JSON | st.integers(-(2**40), 2**40), max_size=6),
    operator_limits(),
)
def test_limits_never_exceed_the_maximums(requested: dict[str, Any], operator: tuple[Limits, Limits]) -> None:
    defaults, maximums = operator
    try:
        limits = resolve_limits(requested, defaults, maximums)
    except InvalidSpec as exc:
        assert exc.param is not None and exc.param.startswith("limits.")
        name = exc.param.removeprefix("limits.")
        assert name in requested, (exc.param, requested)
        value = requested[name]
        assert (
            name not in LIMIT_NAMES
            or isinstance(value, bool)
            or not isinstance(value, int)
            or not getattr(MIN_LIMITS, name) <= value <= getattr(maximums, name)
        ), (name, value)
        return
    for name in LIMIT_NAMES:
        value = getattr(limits, name)
        assert getattr(MIN_LIMITS, name) <= value <= getattr(maximums, name), (name, value)
        if requested.get(name) is not None:
            assert value == requested[name]
        elif name != "cpu_ms" or requested.get("timeout_ms") is None:
            assert value == min(getattr(defaults, name), getattr(maximums, name)), name


# ---- paths of sources and input files ------------------------------------------------------------------


@PROPERTY
@given(
    st.one_of(
        ANY_TEXT,
        st.lists(st.sampled_from(["a", "..", ".", "", "b c", "é", "e\u0301", "x" * 256]), max_size=20).map("/".join),
    )
)
def test_a_path_is_refused_or_stays_inside_the_workspace(path: str) -> None:
    try:
        clean = normalize_relpath(path, param="files[0].path")
    except InvalidSpec as exc:
        assert exc.param == "files[0].path"
        return
    assert clean == path
    parts = clean.split("/")
    assert not clean.startswith("/") and "\\" not in clean
    assert all(p not in ("", ".", "..") and len(p.encode()) <= MAX_COMPONENT_BYTES for p in parts)
    assert len(parts) <= MAX_DEPTH and len(clean.encode()) <= MAX_PATH_BYTES
    assert unicodedata.normalize("NFC", clean) == clean
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in clean)
    base = "/work/inputs"
    assert os.path.normpath(os.path.join(base, clean)).startswith(base + "/")


@PROPERTY
@given(st.lists(st.sampled_from(["a", "A", "a/b", "a/b/c", "b", "B/c", "c", "../c", "d//e"]), max_size=6))
def test_input_files_are_refused_by_index_when_they_clash(paths: list[str]) -> None:
    files = [{"file_id": f"file-{i}", "path": path} for i, path in enumerate(paths)]
    _, error, _ = _validate({"language": "python", "code": "", "files": files})
    folded = [p.casefold() for p in paths]
    bad = [".." in p.split("/") or "" in p.split("/") for p in paths]
    below = any(q.startswith(p + "/") for p in folded for q in folded)
    if error is None:
        assert not any(bad) and len(set(folded)) == len(folded) and not below, paths
        return
    if error["param"] == "files":  # one input is another's directory
        assert below, (paths, error)
        return
    match = re.fullmatch(r"files\[(\d+)\]\.path", error["param"])
    assert match is not None, error
    i = int(match.group(1))
    # The first malformed path, else the second of two that differ only in case.
    assert (bad[i] and not any(bad[:i])) or (not any(bad) and folded[i] in folded[:i]), (paths, error)


@pytest.mark.parametrize("count", [MAX_INPUT_FILES, MAX_INPUT_FILES + 1])
def test_at_most_100_input_files(count: int) -> None:
    files = [{"file_id": f"file-{i}", "path": f"in{i}.csv"} for i in range(count)]
    _, error, _ = _validate({"language": "python", "code": "", "files": files})
    assert (error is None) is (count <= MAX_INPUT_FILES), error
    assert error is None or error["param"] == "files"


# ---- metadata, environment, arguments -------------------------------------------------------------------


@PROPERTY
@given(
    st.dictionaries(
        ANY_TEXT | st.text(min_size=60, max_size=70),
        JSON | st.text(min_size=500, max_size=520),
        max_size=MAX_METADATA_KEYS + 2,
    )
)
def test_metadata_is_echoed_or_refused_by_key(metadata: dict[str, Any]) -> None:
    data, error, _ = _validate({"language": "python", "code": "", "metadata": metadata})

    def clean(text: Any) -> bool:
        return isinstance(text, str) and "\x00" not in text and text.encode(errors="replace").decode() == text

    valid = len(metadata) <= MAX_METADATA_KEYS and all(
        clean(k) and len(k) <= MAX_METADATA_KEY_CHARS and clean(v) and len(v) <= MAX_METADATA_VALUE_CHARS
        for k, v in metadata.items()
    )
    if valid:
        assert error is None and data is not None and data["metadata"] == metadata, error
        return
    assert error is not None and _root(error["param"]) == "metadata", error
    if error["param"] != "metadata":
        assert error["param"].removeprefix("metadata.") in metadata, error


@PROPERTY
@given(
    st.dictionaries(
        ENV_NAME | ANY_TEXT | st.sampled_from(["LD_PRELOAD", "PYTHONPATH", "GOPATH", "PATH", "lower"]),
        JSON,
        max_size=MAX_ENV_VARS + 2,
    )
)
def test_env_is_kept_or_refused_naming_the_variable(env: dict[str, Any]) -> None:
    data, error, _ = _validate({"language": "python", "code": "", "env": env})
    if error is None:
        assert data is not None and data["env"] == env and len(env) <= MAX_ENV_VARS
        for name, value in env.items():
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) and name not in ENV_DENIED_NAMES
            assert not name.startswith(ENV_DENIED_PREFIXES) and "\x00" not in value
        return
    assert error["param"] == "env" or error["param"].removeprefix("env.") in env, error


@PROPERTY
@given(st.lists(JSON | CLEAN_TEXT, max_size=MAX_ARGS + 2) | JSON)
def test_args_are_kept_or_refused(args: Any) -> None:
    data, error, _ = _validate({"language": "python", "code": "", "args": args})
    if error is None:
        assert data is not None and data["args"] == args and len(args) <= MAX_ARGS
        return
    assert re.fullmatch(r"args(\[\d+\])?", error["param"]), error


@PROPERTY
@given(
    st.lists(
        st.fixed_dictionaries({"path": ANY_TEXT | _rel_path(), "content": CLEAN_TEXT | JSON}), max_size=MAX_SOURCES + 2
    )
)
def test_sources_are_kept_or_refused_by_index(sources: list[dict[str, Any]]) -> None:
    data, error, _ = _validate({"language": "go", "code": "", "sources": sources})
    if error is None:
        assert data is not None and [dict(s) for s in data["sources"]] == sources
        return
    assert re.fullmatch(r"sources(\[\d+\]\.(path|content))?", error["param"]), error


# ---- how a DRF error becomes `param` --------------------------------------------------------------------

DETAIL = st.recursive(
    st.builds(exceptions.ErrorDetail, st.text(min_size=1, max_size=5)),
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b", "non_field_errors"]) | st.integers(0, 3), children, min_size=1, max_size=3
        )
    ),
    max_leaves=6,
)


@PROPERTY
@given(DETAIL)
def test_nested_validation_errors_flatten_to_a_dotted_param(detail: Any) -> None:
    message, param = _first_validation_error(detail)
    assert isinstance(message, str) and message
    assert param is None or re.fullmatch(r"(\d+|[ab])?(\[\d+\]|\.[ab])*", param), param
    response = api_exception_handler(exceptions.ValidationError(detail), {"view": None})
    assert response is not None and response.status_code == 400
    assert response.data["error"]["param"] == param


# ---- Idempotency-Key -------------------------------------------------------------------------------------


@PROPERTY
@given(
    st.text(st.characters(codec="latin-1"), max_size=MAX_KEY_CHARS + 5)
    | st.sampled_from(["", "k" * 255, "k" * 256, "a\tb", "ключ"])
)
def test_idempotency_keys_are_accepted_or_refused_by_name(value: str) -> None:
    request = APIRequestFactory().post("/v1/runs", HTTP_IDEMPOTENCY_KEY=value)
    key = ApiKey(pk=7)
    try:
        idem = Idempotency.from_request(request, key, "runs", {"a": 1})
    except APIError as exc:
        assert exc.param == "Idempotency-Key" and exc.status_code == 400
        assert not value or len(value) > MAX_KEY_CHARS or not value.isprintable()
        return
    assert idem is not None and 1 <= len(value) <= MAX_KEY_CHARS and value.isprintable()
    # Stored hashed (any length, any characters), per key and endpoint; the body is fingerprinted.
    assert idem.redis_key == f"codeexec:idem:7:runs:{hashlib.sha256(value.encode()).hexdigest()}"
    assert idem == Idempotency.from_request(request, key, "runs", {"a": 1})
    assert idem.fingerprint != Idempotency.from_request(request, key, "runs", {"a": 2}).fingerprint  # type: ignore[union-attr]
    other_endpoint = Idempotency.from_request(request, key, "files", {"a": 1})
    other_key = Idempotency.from_request(request, ApiKey(pk=8), "runs", {"a": 1})
    assert other_endpoint is not None and other_key is not None
    assert len({idem.redis_key, other_endpoint.redis_key, other_key.redis_key}) == 3


@PROPERTY
@given(st.dictionaries(st.text(max_size=5), JSON, max_size=6), st.randoms())
def test_a_fingerprint_ignores_key_order(body: dict[str, Any], rng: Any) -> None:
    items = list(body.items())
    rng.shuffle(items)
    assert fingerprint(dict(items)) == fingerprint(body)


def test_an_absent_idempotency_key_is_none() -> None:
    request = APIRequestFactory().post("/v1/runs")
    assert Idempotency.from_request(request, ApiKey(pk=7), "runs", {}) is None


# ---- usage date ranges -----------------------------------------------------------------------------------

TODAY = dt.date(2026, 6, 15)
DATE_TEXT = st.one_of(
    st.dates(dt.date(1, 1, 30), dt.date(9999, 12, 30)).map(dt.date.isoformat),
    QUERY_TEXT,
    st.from_regex(r"\d{4}-\d{2}-\d{2}\n?", fullmatch=True),
    st.sampled_from(["2026-02-30", "2026-13-01", "２０２６-01-01", "2026-1-1", "20260101"]),
)


@PROPERTY
@given(st.none() | DATE_TEXT, st.none() | DATE_TEXT)
def test_a_usage_range_is_a_valid_span_or_names_the_bad_end(start: str | None, end: str | None) -> None:
    # Dates from 0001-01-30 to 9999-12-30: parse_range itself overflows outside (the view guards it;
    # test_usage_never_fails_on_any_dates checks that through the API).
    try:
        first, last = parse_range(start, end, today=TODAY)
    except ValueError as exc:
        param, message = exc.args
        assert isinstance(message, str) and message
        assert (param == "start" and start) or (param == "end" and end), (param, start, end)
        return
    assert first <= last and (last - first).days + 1 <= MAX_RANGE_DAYS
    assert last == (dt.date.fromisoformat(end) if end else TODAY)
    if start:
        assert first == dt.date.fromisoformat(start)
    else:
        assert (last - first).days == 29


# ---- through the API: pagination, usage, negotiation --------------------------------------------------------


@pytest.fixture
def runs_of_alice(alice: Tenant, make_run: Any) -> list[Run]:
    """Seven runs, three sharing one creation time (the order breaks ties by the internal key)."""
    now = timezone.now()
    times = [now - dt.timedelta(seconds=s) for s in (50, 40, 30, 30, 30, 20, 10)]
    return [make_run(alice.key, created_at=t) for t in times]


@THROUGH_THE_API
@given(
    limit=st.none() | st.integers(-2, 110).map(str) | QUERY_TEXT,
    order=st.none() | st.sampled_from(["asc", "desc"]) | QUERY_TEXT,
    after=st.none() | st.integers(0, 6) | QUERY_TEXT,
)
def test_list_parameters_page_or_name_the_bad_one(
    alice: Tenant, runs_of_alice: list[Run], limit: str | None, order: str | None, after: int | str | None
) -> None:
    query = {k: v for k, v in {"limit": limit, "order": order}.items() if v is not None}
    if after is not None:
        query["after"] = runs_of_alice[after].public_id if isinstance(after, int) else after
    response = alice.client.get("/v1/runs", query)
    if response.status_code == 400:
        assert response.json()["error"]["param"] in ("limit", "order", "after"), response.json()
        return
    assert response.status_code == 200, response.content
    page = response.json()
    expected = sorted(runs_of_alice, key=lambda r: (r.created_at, r.pk), reverse=query.get("order", "desc") == "desc")
    ids = [r.public_id for r in expected]
    if query.get("after"):
        ids = ids[ids.index(query["after"]) + 1 :]
    size = int(query.get("limit", 20))
    assert [r["id"] for r in page["data"]] == ids[:size]
    assert page["has_more"] is (len(ids) > size)


@THROUGH_THE_API
@given(st.integers(1, 8), st.sampled_from(["asc", "desc"]))
def test_walking_the_cursor_visits_every_run_once(
    alice: Tenant, runs_of_alice: list[Run], limit: int, order: str
) -> None:
    seen: list[str] = []
    after = None
    while True:
        query = {"limit": str(limit), "order": order, **({"after": after} if after else {})}
        page = alice.client.get("/v1/runs", query).json()
        seen += [r["id"] for r in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    expected = sorted(runs_of_alice, key=lambda r: (r.created_at, r.pk), reverse=order == "desc")
    assert seen == [r.public_id for r in expected]


@THROUGH_THE_API
@given(
    start=st.none() | st.dates().map(dt.date.isoformat) | DATE_TEXT,
    end=st.none() | st.dates().map(dt.date.isoformat) | DATE_TEXT,
    group_by=st.none() | st.sampled_from(["day", "language"]) | QUERY_TEXT,
)
@example(start=None, end="0001-01-05", group_by=None)
@example(start="9999-12-31", end="9999-12-31", group_by="language")
def test_usage_never_fails_on_any_dates(
    alice: Tenant, start: str | None, end: str | None, group_by: str | None
) -> None:
    query = {k: v for k, v in {"start": start, "end": end, "group_by": group_by}.items() if v is not None}
    response = alice.client.get("/v1/usage", query)
    if response.status_code == 400:
        assert response.json()["error"]["param"] in query, (query, response.json())
        return
    assert response.status_code == 200, (query, response.content)
    body = response.json()
    assert body["group_by"] == query.get("group_by", "day") and body["start"] <= body["end"]


@THROUGH_THE_API
@given(
    st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=40)
    | st.sampled_from(["application/xml", "text/html", "*/*;q=0", "application/binary"])
)
def test_every_accept_header_gets_json(alice: Tenant, accept: str) -> None:
    # No 406: answers are JSON (or a file's bytes) whatever Accept says, as with OpenAI's API.
    response = alice.client.get("/v1/runs", HTTP_ACCEPT=accept)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    json.loads(response.content)
