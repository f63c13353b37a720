"""The service's own /v1/openapi.json loaded into Schemathesis, and what every fuzz test sends and checks.

Requests reach the WSGI application in the test's thread (real PostgreSQL and Redis; a real Dramatiq
worker where runs must run). Every response goes through all of Schemathesis' checks: no 5xx, a
documented status code, content type and headers, a body valid against its schema, schema-invalid
requests rejected, 401 without a key, 404 after DELETE, and schema-valid requests accepted, except
for the rules the schema can only state in words (`rejected_only_by_documented_rules`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from urllib3 import encode_multipart_formdata

from codeexec_site.wsgi import application
from runs import redis as cx_redis
from runs.models import ApiKey
from runs.serializers import NUL_MESSAGE, SURROGATE_MESSAGE_PREFIX

schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", application)
# Every request carries the fuzzer's key (the `ignored_auth` check sends requests without one); a
# generated Authorization header would only be overwritten by it.
schema.config.generation.update(with_security_parameters=False)

# Deterministic and bounded, for CI: derandomized, no example database, no per-example deadline
# (a run in the sandbox takes what it takes), and function-scoped fixtures are what the fuzz is about.
FUZZ_SETTINGS = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))

# Ids of the fuzzer's real objects, set by the `existing` fixture before an operation's examples run.
KNOWN_IDS: dict[str, list[str]] = {"run": [], "file": []}

# 400s that schema-valid requests may get: the rules the schema states in words because OpenAPI 3.0
# cannot state them (path normalisation, environment names and their deny-list, byte sizes, an id that
# exists, a date range in order), by operation and the error's `param`.
WORDED_RULES = {
    "POST /v1/runs": re.compile(
        r"args(\[\d+\])?|env(\..*)?|sources(\[\d+\]\.path)?|files(\[\d+\]\.path)?|metadata|Idempotency-Key",
        re.DOTALL,  # an environment name the fuzzer made may hold a newline: `env.A\nB` is still env's rule
    ),
    "POST /v1/files": re.compile(r"Idempotency-Key"),
    "GET /v1/runs": re.compile(r"after"),
    "GET /v1/files": re.compile(r"after"),
    "GET /v1/usage": re.compile(r"start|end"),
}
# Any string field refuses U+0000 and lone surrogates (RunCreateRequest's description says so).
TEXT_MESSAGES = (NUL_MESSAGE, SURROGATE_MESSAGE_PREFIX)


def rejected_only_by_documented_rules(ctx: Any, response: Any, case: Any) -> None:
    """positive_data_acceptance, except for a 400 that names a rule only the schema's prose states."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 400:
        positive_data_acceptance(ctx, response, case)
        return
    error = response.json()["error"]
    rule = WORDED_RULES.get(f"{case.method.upper()} {case.operation.path}")
    if error["message"].startswith(TEXT_MESSAGES) or (rule is not None and rule.fullmatch(error["param"] or "")):
        return
    raise AssertionError(f"A schema-valid request was rejected: {error}")


CHECKS: dict[str, Any] = {
    "excluded_checks": [positive_data_acceptance],
    "additional_checks": [rejected_only_by_documented_rules],
}


# ---- generation: real ids in place of random ones, some of the time ---------------------------------


@schema.hooks.hook("flatmap_path_parameters")
def existing_ids(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The generated id, or one of a real object's of the operation's kind."""
    ids = KNOWN_IDS["run" if context.operation.path.startswith("/v1/runs/") else "file"]
    if not ids or "public_id" not in (path_parameters or {}):
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.sampled_from(ids).map(lambda i: {**path_parameters, "public_id": i}))


@schema.hooks.hook("flatmap_body").apply_to(method="POST", path="/v1/runs")
def existing_input_files(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """POST /v1/runs: each `files[i].file_id` as generated, or a real file's (the run then stages it)."""
    refs = body.get("files") if isinstance(body, dict) else None
    ids = KNOWN_IDS["file"]
    if not ids or not isinstance(refs, list) or not all(isinstance(r, dict) and "file_id" in r for r in refs):
        return st.just(body)
    choices = [st.sampled_from([r["file_id"], *ids]).map(lambda i, r=r: {**r, "file_id": i}) for r in refs]
    return st.tuples(*choices).map(lambda files: {**body, "files": list(files)})


# ---- sending ------------------------------------------------------------------------------------


def forget_idempotency_keys(key: ApiKey) -> None:
    """Examples are independent: no Idempotency-Key of an earlier one is remembered (reuse is tested
    in test_sequences.py and tests/api/test_idempotency.py)."""
    redis = cx_redis.client()
    for name in redis.scan_iter(match=f"codeexec:idem:{key.pk}:*"):
        redis.delete(name)


def empty_file_upload(case: Any) -> dict[str, Any]:
    """Call arguments for a multipart body whose `file` part is empty, encoded as real clients do.

    Werkzeug's test encoder, which Schemathesis uses for WSGI apps, leaves out the line break that
    ends an empty part; Django then reads that malformed body as one without a file.
    """
    body = case.body
    if not (
        case.method.upper() == "POST"
        and case.operation.path == "/v1/files"
        and isinstance(body, dict)
        and body.get("file") in (b"", "")
    ):
        return {}
    # Other values as Schemathesis sends them: text as is, anything else as JSON.
    fields = {
        k: ("file", b"") if k == "file" else v if isinstance(v, (str, bytes)) else json.dumps(v)
        for k, v in body.items()
    }
    data, content_type = encode_multipart_formdata(fields)
    return {"data": data, "headers": {"Content-Type": content_type}}


def call_kwargs(case: Any, token: str) -> dict[str, Any]:
    """What `case.call()` needs: the key, and the empty-file fix."""
    extra = empty_file_upload(case)
    return {**extra, "headers": {"Authorization": f"Bearer {token}", **extra.get("headers", {})}}


def call_and_validate(case: Any, token: str) -> Any:
    """Send `case` with the key and run every check on the answer."""
    return case.call_and_validate(**call_kwargs(case, token), **CHECKS)
