"""API_KEYS is declarative for the keys it lists (runs.keys.sync_api_keys); createapikey makes CLI keys."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from runs.keys import parse_api_keys, sync_api_keys
from runs.models import ApiKey, hash_token
from tests.api import assert_error


@pytest.fixture(autouse=True)
def _no_env_keys(db: None) -> None:
    """Start without the keys the development API_KEYS made when the test database was migrated."""
    ApiKey.objects.filter(source=ApiKey.Source.ENV).delete()


def _status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/v1/runs").status_code


def test_it_creates_the_listed_keys() -> None:
    counts = sync_api_keys("tok_alice_1:alice:5:10, tok_bob_22:bob:0.5:1")
    assert counts == {"created": 2, "updated": 0, "deactivated": 0}
    alice = ApiKey.objects.get(token_hash=hash_token("tok_alice_1"))
    assert (alice.label, alice.rps, alice.burst, alice.source) == ("alice", 5.0, 10, ApiKey.Source.ENV)
    assert alice.is_usable
    bob = ApiKey.objects.get(label="bob")
    assert (bob.rps, bob.burst) == (0.5, 1)
    assert _status("tok_alice_1") == 200
    assert _status("tok_bob_22") == 200


def test_it_stores_env_tokens_hashed() -> None:
    sync_api_keys("tok_secret_value:ops:1:1")
    key = ApiKey.objects.get(label="ops")
    assert key.token_hash == hash_token("tok_secret_value")
    assert "tok_secret_value" not in (key.token_hash, key.prefix)


def test_it_is_idempotent() -> None:
    sync_api_keys("tok_alice_1:alice:5:10")
    before = ApiKey.objects.get(label="alice").updated_at
    assert sync_api_keys("tok_alice_1:alice:5:10") == {"created": 0, "updated": 0, "deactivated": 0}
    assert ApiKey.objects.filter(source=ApiKey.Source.ENV).count() == 1
    assert ApiKey.objects.get(label="alice").updated_at == before


def test_it_updates_a_listed_key_to_match() -> None:
    sync_api_keys("tok_alice_1:alice:5:10")
    pk = ApiKey.objects.get(label="alice").pk
    counts = sync_api_keys("tok_alice_1:alice-renamed:2.5:3")
    assert counts == {"created": 0, "updated": 1, "deactivated": 0}
    key = ApiKey.objects.get(pk=pk)
    assert (key.label, key.rps, key.burst) == ("alice-renamed", 2.5, 3)


def test_it_deactivates_env_keys_no_longer_listed() -> None:
    sync_api_keys("tok_alice_1:alice:5:10,tok_bob_22:bob:5:10")
    counts = sync_api_keys("tok_alice_1:alice:5:10")
    assert counts == {"created": 0, "updated": 0, "deactivated": 1}
    assert not ApiKey.objects.get(label="bob").is_active
    assert_error(_client_get("tok_bob_22"), 401, "authentication_error", code="invalid_api_key")
    assert _status("tok_alice_1") == 200


def test_it_deactivates_every_env_key_when_the_variable_is_empty() -> None:
    sync_api_keys("tok_alice_1:alice:5:10,tok_bob_22:bob:5:10")
    assert sync_api_keys("")["deactivated"] == 2
    assert _status("tok_alice_1") == 401


def test_it_reactivates_a_key_listed_again() -> None:
    sync_api_keys("tok_bob_22:bob:5:10")
    sync_api_keys("")
    assert _status("tok_bob_22") == 401
    counts = sync_api_keys("tok_bob_22:bob:5:10")
    assert counts["updated"] == 1 and counts["created"] == 0
    assert _status("tok_bob_22") == 200


def test_it_reactivates_a_revoked_env_key_listed_again() -> None:
    sync_api_keys("tok_bob_22:bob:5:10")
    ApiKey.objects.get(label="bob").revoke()
    sync_api_keys("tok_bob_22:bob:5:10")
    assert ApiKey.objects.get(label="bob").is_usable


def test_it_never_touches_keys_made_elsewhere() -> None:
    cli, cli_token = ApiKey.create_with_token("carol", source=ApiKey.Source.CLI, rps=1, burst=2)
    admin, admin_token = ApiKey.create_with_token("dave", source=ApiKey.Source.ADMIN)
    revoked, revoked_token = ApiKey.create_with_token("erin", source=ApiKey.Source.ADMIN)
    revoked.revoke()
    sync_api_keys("tok_alice_1:alice:5:10")
    sync_api_keys("")
    for key in (cli, admin):
        key.refresh_from_db()
        assert key.is_usable
    revoked.refresh_from_db()
    assert not revoked.is_usable  # not reactivated either
    assert _status(cli_token) == 200 and _status(admin_token) == 200
    assert _status(revoked_token) == 401


def test_it_leaves_a_cli_key_alone_even_when_its_token_is_listed() -> None:
    cli, token = ApiKey.create_with_token("carol", source=ApiKey.Source.CLI, token="tok_carol_333", rps=1, burst=2)
    assert sync_api_keys("tok_carol_333:hijacked:100:100") == {"created": 0, "updated": 0, "deactivated": 0}
    cli.refresh_from_db()
    assert (cli.label, cli.rps, cli.burst, cli.source) == ("carol", 1.0, 2, ApiKey.Source.CLI)
    assert ApiKey.objects.filter(token_hash=hash_token(token)).count() == 1


@pytest.mark.parametrize(
    "value",
    [
        "tok_alice_1:alice:5",  # three fields
        "tok_alice_1:alice:5:10:extra",
        "short:alice:5:10",  # token too short
        "tok_alice_1::5:10",  # empty label
        "tok_alice_1:alice:fast:10",
        "tok_alice_1:alice:5:many",
        "tok_alice_1:alice:0:10",
        "tok_alice_1:alice:5:0",
        "tok_alice_1:alice:5:10,tok_alice_1:again:5:10",  # the same token twice
    ],
)
def test_it_rejects_a_malformed_variable_without_changing_anything(value) -> None:
    ApiKey.create_with_token("old", source=ApiKey.Source.ENV, token="tok_old_key")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        sync_api_keys(value)
    message = str(excinfo.value)
    assert "tok_alice_1" not in message  # errors name the entry, never its token
    assert ApiKey.objects.filter(source=ApiKey.Source.ENV).count() == 1
    assert ApiKey.objects.get(label="old").is_active


def test_it_ignores_blank_entries_and_spaces() -> None:
    specs = parse_api_keys(" tok_alice_1:alice:5:10 , ,tok_bob_22:bob:1:1,")
    assert [(s.token, s.label) for s in specs] == [("tok_alice_1", "alice"), ("tok_bob_22", "bob")]


def test_it_syncs_with_the_management_command(settings) -> None:
    settings.API_KEYS = "tok_alice_1:alice:5:10"
    out = StringIO()
    call_command("syncapikeys", stdout=out)
    assert out.getvalue().strip() == "1 created, 0 updated, 0 deactivated"
    assert _status("tok_alice_1") == 200


# ---- createapikey ---------------------------------------------------------------------------------


def _client_get(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/v1/runs")


def test_it_creates_a_key_and_prints_its_token_once() -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "createapikey", "carol", "--rps", "2", "--burst", "3", "--max-concurrent-runs", "5", stdout=out, stderr=err
    )
    token = out.getvalue().strip()
    assert token and "\n" not in token
    assert token not in err.getvalue()
    key = ApiKey.objects.get(label="carol")
    assert key.source == ApiKey.Source.CLI
    assert (key.rps, key.burst, key.max_concurrent_runs) == (2.0, 3, 5)
    assert key.token_hash == hash_token(token)
    assert token not in key.token_hash
    assert _client_get(token).status_code == 200


def test_it_makes_distinct_tokens_for_the_same_label() -> None:
    tokens = set()
    for _ in range(2):
        out = StringIO()
        call_command("createapikey", "carol", stdout=out, stderr=StringIO())
        tokens.add(out.getvalue().strip())
    assert len(tokens) == 2
    assert ApiKey.objects.filter(label="carol").count() == 2


def test_it_keeps_cli_keys_through_a_sync() -> None:
    out = StringIO()
    call_command("createapikey", "carol", stdout=out, stderr=StringIO())
    sync_api_keys("")
    assert _client_get(out.getvalue().strip()).status_code == 200


@pytest.mark.parametrize(
    "args",
    [["carol", "--rps", "0"], ["carol", "--burst", "0"], ["carol", "--max-concurrent-runs", "0"], ["   "], ["x" * 101]],
)
def test_it_refuses_bad_createapikey_arguments(args) -> None:
    with pytest.raises(CommandError):
        call_command("createapikey", *args, stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.filter(source=ApiKey.Source.CLI).exists()
