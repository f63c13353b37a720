"""The official `openai` Python SDK against a live server of the project: the Files API is wire-compatible."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from runs.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk(live_server) -> Iterator[Callable[..., openai.OpenAI]]:
    """OpenAI clients for new keys (alice, bob); closed afterwards so the server's keep-alive threads end."""
    clients: list[openai.OpenAI] = []

    def make(label: str = "alice", token: str | None = None) -> openai.OpenAI:
        if token is None:
            _key, token = ApiKey.create_with_token(label)
        client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=token, max_retries=0, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_it_creates_lists_retrieves_and_deletes_files(sdk) -> None:
    client = sdk()
    data = b"name,score\nada,3\n\x00\xff binary tail"
    created = client.files.create(file=("scores.csv", data), purpose="user_data")
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(data)
    assert created.filename == "scores.csv"
    assert created.purpose == "user_data"
    assert created.status == "processed"
    assert isinstance(created.created_at, int)

    listed = client.files.list()
    assert [f.id for f in listed.data] == [created.id]
    assert [f.id for f in client.files.list(purpose="user_data")] == [created.id]
    assert list(client.files.list(purpose="assistants")) == []

    retrieved = client.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()

    deleted = client.files.delete(created.id)
    assert deleted.id == created.id
    assert deleted.deleted is True
    assert deleted.object == "file"
    assert list(client.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_it_downloads_file_content_with_the_sdk(sdk) -> None:
    client = sdk()
    data = bytes(range(256)) * 64
    created = client.files.create(file=("blob.bin", data), purpose="user_data")
    content = client.files.content(created.id)  # the SDK asks for `Accept: application/binary`
    assert content.content == data
    assert content.response.headers["content-disposition"].startswith("attachment")
    assert content.response.headers["x-content-type-options"] == "nosniff"


def test_it_pages_through_files_with_the_sdk(sdk) -> None:
    client = sdk()
    ids = {client.files.create(file=(f"{i}.txt", f"{i}".encode()), purpose="assistants").id for i in range(5)}
    first = client.files.list(limit=2)
    assert len(first.data) == 2
    assert first.has_more is True
    seen = [f.id for f in client.files.list(limit=2)]  # the SDK follows `after` through every page
    assert set(seen) == ids and len(seen) == 5


def test_it_hides_another_keys_files_from_the_sdk(sdk) -> None:
    alice, bob = sdk("alice"), sdk("bob")
    theirs = bob.files.create(file=("secret.txt", b"bob only"), purpose="user_data")
    with pytest.raises(openai.NotFoundError) as excinfo:
        alice.files.retrieve(theirs.id)
    assert excinfo.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        alice.files.delete(theirs.id)
    assert list(alice.files.list()) == []
    assert bob.files.retrieve(theirs.id).id == theirs.id
    with pytest.raises(openai.NotFoundError):  # content too: 404 for alice, whatever she accepts
        alice.files.content(theirs.id, extra_headers={"Accept": "*/*"})


def test_it_maps_errors_to_the_sdk_exceptions(sdk) -> None:
    bad = sdk(token="cx_wrong")
    with pytest.raises(openai.AuthenticationError) as excinfo:
        bad.files.list()
    assert excinfo.value.status_code == 401
    assert excinfo.value.body["type"] == "authentication_error"  # the SDK unwraps {"error": {...}}
    assert excinfo.value.code == "invalid_api_key"

    with pytest.raises(openai.BadRequestError) as bad_request:
        sdk().files.create(file=("x.txt", b"x"), purpose="homework")  # type: ignore[arg-type]
    assert bad_request.value.param == "purpose"
