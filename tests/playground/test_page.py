"""The page at `/`: who may see it, what it carries (and what it never carries: a key), its assets."""

from __future__ import annotations

import json
import re

from django.contrib.staticfiles import finders
from django.test import Client

from playground.examples import EXAMPLES
from sandbox import all_languages

from .conftest import logged_in, playground_keys

# The hooks the browser tests and the script rely on (documented at the top of the template).
PAGE_IDS = [
    "language",
    "example",
    "load-example",
    "code",
    "stdin",
    "timeout_ms",
    "memory_mb",
    "run",
    "status",
    "message",
    "run-id",
    "stdout",
    "stderr",
    "usage-wall_ms",
    "usage-cpu_ms",
    "usage-memory_peak",
    "usage-exit_code",
    "artifacts",
    "recent-runs",
]


def _config(response) -> dict:
    match = re.search(rb'<script id="playground-config" type="application/json">(.*?)</script>', response.content, re.S)
    assert match, response.content[:2000]
    return json.loads(match.group(1))


def test_it_redirects_anonymous_users_to_the_admin_login(db) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/"


def test_it_refuses_users_who_are_not_staff(charlie) -> None:
    response = logged_in(charlie).get("/")
    assert response.status_code == 403
    assert b"for staff users" in response.content
    assert b"playground-config" not in response.content
    assert not playground_keys().exists()


def test_it_refuses_an_inactive_staff_user(alice) -> None:
    client = logged_in(alice)
    alice.is_active = False
    alice.save()
    response = client.get("/")
    assert response.status_code == 302  # the session no longer authenticates an inactive user
    assert response["Location"].startswith("/admin/login/")


def test_it_shows_the_page_to_staff(alice_client) -> None:
    response = alice_client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    for element_id in PAGE_IDS:
        assert f'id="{element_id}"' in html, element_id
    assert "playground:alice" in html
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    # Nothing from the internet: every script and stylesheet is one of ours under STATIC_URL.
    assert re.findall(r'<script src="([^"]+)"', html) == ["/static/playground/playground.js"]
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', html) == ["/static/playground/playground.css"]
    assert "http://" not in html.split("</head>")[0] and "https://" not in html.split("</head>")[0]


def test_it_does_not_make_a_key_to_show_the_page(alice_client) -> None:
    assert alice_client.get("/").status_code == 200
    assert not playground_keys().exists()


def test_it_never_puts_the_key_in_the_page(alice_client) -> None:
    run = alice_client.post("/playground/api/runs", {"language": "python", "code": "print(1)"}, "application/json")
    assert run.status_code == 202, run.content
    key = playground_keys().get()
    html = alice_client.get("/").content.decode()
    assert key.prefix not in html
    assert key.token_hash not in html
    assert "cx_" not in html


def test_it_offers_every_language_with_an_example(alice_client) -> None:
    config = _config(alice_client.get("/"))
    names = [lang["name"] for lang in config["languages"]]
    assert names == [lang.name for lang in all_languages()]
    assert set(EXAMPLES) == set(names)
    for lang in config["languages"]:
        assert lang["examples"], lang["name"]
        assert all(example["code"].strip() for example in lang["examples"])
    python_examples = {e["id"] for e in config["languages"][0]["examples"]}
    assert {"python-hello", "python-plot", "python-loop"} <= python_examples
    assert config["urls"] == {
        "runs": "/playground/api/runs",
        "run": "/playground/api/runs/RUN_ID",
        "events": "/playground/api/runs/RUN_ID/events",
        "login": "/admin/login/?next=/",
    }
    assert config["limits"]["timeout_ms"] == {"default": 10_000, "max": 60_000}


def test_it_serves_its_script_and_stylesheet(alice_client) -> None:
    for name in ("playground/playground.js", "playground/playground.css"):
        assert finders.find(name), name
        response = Client().get(f"/static/{name}")
        assert response.status_code == 200, name
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body
