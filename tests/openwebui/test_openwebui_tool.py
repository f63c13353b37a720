"""openwebui_tool.py called through Open WebUI 0.12.4's own tool path (tests/openwebui/driver.py, run by
Open WebUI's virtualenv) against a live codeexec: every language, stdin, a PNG shown in the chat, the
user's own key, a wrong key, a timeout, a rate limit, an unreachable service, polling after 202, output
truncation and a Go compile error; and streaming: output in the status line while the program runs,
the same result text with the stream Valve off, the deadline, and a stream cut or garbled on the way
(tests/openwebui/stream_proxy.py) that the tool replaces by polling. One driver process runs every
scenario (Open WebUI takes seconds to import); the tests assert on its JSON. It also writes
test-artifacts/openwebui/transcript.md, the scripted transcript in docs/openwebui.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import ARTIFACTS, ROOT, LiveStack
from tests.openwebui.conftest import RUN_WAIT_MAX_S
from tests.openwebui.stream_proxy import StreamProxy
from tests.support import free_port

# The servers need pytest-django's test database, which it only makes for tests that ask for one.
pytestmark = pytest.mark.django_db

DRIVER = Path(__file__).with_name("driver.py")
TOOL = ROOT / "openwebui_tool.py"
DRIVER_TIMEOUT_S = 600
HELLO = {
    "python": 'print("Hello, world!")',
    "node": 'console.log("Hello, world!");',
    "ruby": 'puts "Hello, world!"',
    "php": '<?php echo "Hello, world!\\n";',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, world!")\n}\n',
}
PLOT = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 2 * np.pi, 200)
y = np.sin(x)
os.makedirs("outputs", exist_ok=True)
plt.plot(x, y)
plt.title("sin(x)")
plt.savefig("outputs/sine.png", dpi=60)
np.savetxt("outputs/sine.csv", np.c_[x, y], delimiter=",", header="x,sin_x", comments="")
print(f"max sin(x) = {y.max():.4f} at x = {x[y.argmax()]:.4f}")
"""
PAUSE_S = 1.5
PROGRESS = f"import time\n\nprint('step 1', flush=True)\ntime.sleep({PAUSE_S})\nprint('step 2', flush=True)\n"
# Long enough to outlive the shortened deadline, ended by the server's own timeout_ms if the cancel failed.
DEADLINE_TIMEOUT_MS = 6000
DEADLINE_BUDGET_S = 2
CUT = "import time\n\nprint('before', flush=True)\ntime.sleep(1)\nprint('after')\n"


def _scenarios(stack_url: str, tokens: dict[str, str], proxy_url: str) -> list[dict[str, Any]]:
    scenarios: list[dict[str, Any]] = [
        {"name": f"hello_{lang}", "arguments": {"language": lang, "code": code}, "question": f"Say hello in {lang}."}
        for lang, code in HELLO.items()
    ]
    scenarios += [
        {
            "name": "stdin",
            "arguments": {
                "language": "python",
                "code": "import sys\nprint(sys.stdin.read().upper())",
                "stdin": "shout",
            },
        },
        {
            "name": "plot_png",
            "question": "Plot sin(x) from 0 to 2π and tell me where it peaks.",
            "arguments": {"language": "python", "code": PLOT},
        },
        {
            "name": "own_key",  # the admin's key is wrong; the user's own key is used instead
            "valves": {"api_key": "ck-not-a-key"},
            "user_valves": {"api_key": tokens["alice"]},
            "arguments": {"language": "ruby", "code": "puts 6 * 7"},
        },
        {
            "name": "wrong_key",
            "valves": {"api_key": "ck-not-a-key"},
            "question": "What is 6 * 7? Compute it.",
            "arguments": {"language": "python", "code": "print(6 * 7)"},
        },
        {
            "name": "timeout",
            "valves": {"timeout_ms": 1000},
            "question": "Run an infinite loop.",
            "arguments": {"language": "python", "code": "while True:\n    pass"},
        },
        {
            "name": "bad_language",
            "arguments": {"language": "rust", "code": 'fn main() { println!("hi"); }'},
        },
        {
            "name": "service_down",
            "valves": {"base_url": f"http://127.0.0.1:{free_port()}"},
            "arguments": {"language": "python", "code": "print(1)"},
        },
        {
            "name": "host_not_allowed",  # the stack's ALLOWED_HOSTS has 127.0.0.1 only
            "valves": {"base_url": stack_url.replace("127.0.0.1", "localhost")},
            "arguments": {"language": "python", "code": "print(1)"},
        },
        {
            "name": "throttled_first",
            "valves": {"api_key": tokens["throttled"]},
            "arguments": {"language": "php", "code": "<?php echo 1;"},
        },
        {
            "name": "throttled_second",
            "valves": {"api_key": tokens["throttled"]},
            "arguments": {"language": "php", "code": "<?php echo 2;"},
        },
        {
            "name": "slow_poll",  # longer than the server's wait: the stream ends with the run unfinished; polled
            "arguments": {"language": "node", "code": "setTimeout(() => console.log('done'), 5000);"},
        },
        {
            "name": "slow_poll_unstreamed",  # 202 after the server's wait, then polled
            "valves": {"stream": False},
            "arguments": {"language": "node", "code": "setTimeout(() => console.log('done'), 5000);"},
        },
        {
            "name": "long_output",
            "valves": {"max_output_chars": 300},
            "arguments": {"language": "python", "code": "for i in range(2000):\n    print(i)"},
        },
        {
            "name": "go_compile_error",
            "arguments": {"language": "go", "code": 'package main\n\nfunc main() {\n\tfmt.Println("x")\n}\n'},
        },
        # ---- streaming
        {
            "name": "progress",
            "question": "Print step 1, wait a moment, then print step 2.",
            "arguments": {"language": "python", "code": PROGRESS},
        },
        {
            "name": "progress_unstreamed",
            "valves": {"stream": False},
            "arguments": {"language": "python", "code": PROGRESS},
        },
        {
            "name": "hello_python_unstreamed",
            "valves": {"stream": False},
            "arguments": {"language": "python", "code": HELLO["python"]},
        },
        {
            "name": "deadline",  # the tool's deadline (timeout_ms + DEADLINE_SLACK_S) made shorter than the run
            "valves": {"timeout_ms": DEADLINE_TIMEOUT_MS},
            "tool_globals": {"DEADLINE_SLACK_S": DEADLINE_BUDGET_S - DEADLINE_TIMEOUT_MS / 1000},
            "arguments": {
                "language": "python",
                "code": "import time\n\nprint('working', flush=True)\ntime.sleep(60)\n",
            },
        },
        {
            "name": "stream_cut",
            "valves": {"base_url": f"{proxy_url}/cut"},
            "arguments": {"language": "python", "code": CUT},
        },
        {
            "name": "stream_garbage",
            "valves": {"base_url": f"{proxy_url}/garbage"},
            "arguments": {"language": "python", "code": CUT},
        },
    ]
    return scenarios


@pytest.fixture(scope="module")
def stream_proxy(live_stack: LiveStack) -> Iterator[StreamProxy]:
    with StreamProxy(live_stack.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def driven(
    openwebui_python: Path, live_stack: LiveStack, api_keys: dict[str, str], stream_proxy: StreamProxy
) -> dict[str, Any]:
    """Every scenario through Open WebUI's tool path, in one driver process."""
    with tempfile.TemporaryDirectory(prefix="codeexec-openwebui-data-") as data_dir:
        plan = {
            "tool_path": str(TOOL),
            "valves": {
                "base_url": live_stack.url,
                "api_key": api_keys["alice"],
                "timeout_ms": 10000,
                "memory_mb": 256,
                "max_output_chars": 4000,
            },
            "scenarios": _scenarios(live_stack.url, api_keys, stream_proxy.url),
        }
        plan_path, out_path = Path(data_dir, "plan.json"), Path(data_dir, "out.json")
        plan_path.write_text(json.dumps(plan))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": data_dir,  # caches Open WebUI's libraries write stay in the throwaway directory
            "LANG": "C.UTF-8",
            "DATA_DIR": str(Path(data_dir, "data")),
            "FROM_INIT_PY": "true",
            "WEBUI_SECRET_KEY": secrets.token_urlsafe(32),
            "ENABLE_VALVE_ENCRYPTION": "true",  # Valves (the api_key) stored encrypted, as operators should
            "OFFLINE_MODE": "true",
            "HF_HUB_OFFLINE": "1",
        }  # and no DATABASE_URL / REDIS_URL: Open WebUI reads those names too, and must use its own SQLite
        log = ARTIFACTS / "openwebui" / "driver.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("wb") as log_file:
            proc = subprocess.run(
                [str(openwebui_python), str(DRIVER), str(plan_path), str(out_path)],
                cwd=data_dir,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=DRIVER_TIMEOUT_S,
            )
        elapsed_s = time.monotonic() - started
        live_stack.check_alive()
        if proc.returncode != 0 or not out_path.exists():
            pytest.fail(f"the driver exited with {proc.returncode}:\n{log.read_text(errors='replace')[-6000:]}")
        out: dict[str, Any] = json.loads(out_path.read_text())
    out["elapsed_s"] = round(elapsed_s, 1)
    print(f"\nOpen WebUI driver: {out['elapsed_s']} s in all, timings {out['timings_s']}")
    (ARTIFACTS / "openwebui" / "driver-output.json").write_text(json.dumps(out, indent=2))
    out["by_name"] = {scenario["name"]: scenario for scenario in out["scenarios"]}
    for scenario in out["scenarios"]:
        assert "driver_error" not in scenario, f"{scenario['name']}:\n{scenario['driver_error']}"
    _write_transcript(out)
    return out


def _scenario(driven: dict[str, Any], name: str) -> dict[str, Any]:
    scenario: dict[str, Any] = driven["by_name"][name]
    return scenario


def _statuses(scenario: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(e["data"]["description"], e["data"]["done"]) for e in scenario["events"] if e["type"] == "status"]


# ---- what Open WebUI makes of the file -------------------------------------------------------------


def test_it_loads_as_an_open_webui_tool(driven: dict[str, Any]) -> None:
    assert driven["open_webui_version"] == "0.12.4"
    assert driven["frontmatter"]["title"] == "codeexec"
    assert "requirements" not in driven["frontmatter"]  # nothing for Open WebUI to pip install
    assert [spec["name"] for spec in driven["specs"]] == ["run_code"]  # helpers stay private


def test_it_offers_the_model_one_function_with_five_languages(driven: dict[str, Any]) -> None:
    (offered,) = _scenario(driven, "hello_python")["model_tools"]
    function = offered["function"]
    assert function["name"] == "run_code"
    assert "no network" in function["description"] and "outputs/" in function["description"]
    parameters = function["parameters"]
    assert parameters["required"] == ["language", "code"]
    assert set(parameters["properties"]) == {"language", "code", "stdin"}  # no __user__, __event_emitter__
    assert parameters["properties"]["language"]["enum"] == ["python", "node", "ruby", "php", "go"]
    assert parameters["properties"]["stdin"]["type"] == "string"
    assert all(prop.get("description") for prop in parameters["properties"].values())


def test_it_masks_the_api_keys_as_password_inputs(driven: dict[str, Any]) -> None:
    valves = driven["valves_schema"]["properties"]
    assert set(valves) == {"base_url", "api_key", "timeout_ms", "memory_mb", "max_output_chars", "stream"}
    assert valves["stream"]["type"] == "boolean" and valves["stream"]["default"] is True
    assert valves["api_key"]["type"] == "string" and valves["api_key"]["input"] == {"type": "password"}
    user_valves = driven["user_valves_schema"]["properties"]
    assert user_valves["api_key"]["type"] == "string" and user_valves["api_key"]["input"] == {"type": "password"}


# ---- runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", list(HELLO))
def test_it_says_hello_in_every_language(driven: dict[str, Any], language: str) -> None:
    scenario = _scenario(driven, f"hello_{language}")
    result = scenario["result"]
    assert scenario["raw_result_type"] == "str"
    assert scenario["output_status"] == "completed"
    assert re.match(rf"Ran {language} \S+ in \d+ ms: succeeded, exit code 0\.", result), result
    assert "stdout:\n```\nHello, world!\n```" in result
    assert "stderr: (empty)" in result
    statuses = _statuses(scenario)
    assert statuses[0] == (f"Running {language} code in codeexec…", False)
    assert statuses[-1][1] is True and statuses[-1][0].startswith(f"{language}: succeeded")
    assert not scenario["result_files"] and not scenario["embeds"]


def test_it_passes_stdin(driven: dict[str, Any]) -> None:
    assert "```\nSHOUT\n```" in _scenario(driven, "stdin")["result"]


def test_it_shows_a_png_in_the_chat_and_links_every_file(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "plot_png")
    result = scenario["result"]
    assert "max sin(x) = 1.0000" in result
    links = dict(re.findall(r"- \[([^\]]+)\]\((http[^)]+)\)", result))
    assert set(links) == {"sine.png", "sine.csv"}
    assert "(image/png, " in result and "already shown to the user in the chat" in result
    assert "links valid until" in result

    (files_event,) = [e for e in scenario["events"] if e["type"] == "files"]
    (image,) = files_event["data"]["files"]  # the CSV is linked, not shown
    assert image["type"] == "image" and image["name"] == "sine.png"
    assert image["url"]["data_url"].startswith("data:image/png;base64,") and image["url"]["png_signature"]
    # The same bytes as the artifact behind the signed link in the text (which needs no key).
    with urllib.request.urlopen(links["sine.png"], timeout=30) as response:
        artifact = response.read()
    assert image["url"]["sha256"] == hashlib.sha256(artifact).hexdigest()
    # Open WebUI's socket emitter stored it on the chat message, where the chat shows it after a reload.
    assert scenario["stored_files"] == [image]
    assert not scenario["result_files"]  # nothing base64 reached the model's text


def test_it_uses_the_users_own_key_first(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "own_key")
    assert "succeeded" in scenario["result"] and "42" in scenario["result"]


def test_it_reports_a_wrong_key_as_text(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "wrong_key")
    result = scenario["result"]
    assert result.startswith("Error: codeexec rejected the API key (401")
    assert "The code was not run." in result
    assert scenario["output_status"] == "failed"  # Open WebUI marks the call failed for the model
    assert _statuses(scenario)[-1] == ("codeexec: HTTP 401", True)


def test_it_reports_a_timeout(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "timeout")
    result = scenario["result"]
    assert "timeout: the wall-clock limit of 1000 ms was reached and the program was killed" in result
    assert scenario["output_status"] == "completed"  # the tool worked; the program timed out
    assert _statuses(scenario)[-1][0].startswith("python: timeout")


def test_it_refuses_an_unknown_language_without_calling_the_service(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "bad_language")
    assert scenario["result"] == "Error: unsupported language 'rust'. Use one of: python, node, ruby, php, go."
    assert scenario["output_status"] == "failed"
    assert scenario["events"] == []


def test_it_reports_an_unreachable_service(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "service_down")
    assert scenario["result"].startswith("Error: cannot reach codeexec at http://127.0.0.1:")
    assert "host.docker.internal" in scenario["result"]  # the usual cause, when Open WebUI runs in Docker
    assert _statuses(scenario)[-1] == ("codeexec: unreachable", True)


def test_it_points_at_allowed_hosts_when_django_refuses_the_host(driven: dict[str, Any]) -> None:
    result = _scenario(driven, "host_not_allowed")["result"]
    # DEBUG=1 here: Django's own 400 page; with DEBUG=0 codeexec's envelope (bad_request), see test_tool_unit.
    assert result == (
        "Error: codeexec answered HTTP 400 without an error message. An admin should check that 'localhost' "
        "is in codeexec's ALLOWED_HOSTS. The code was not run."
    )


def test_it_reports_a_rate_limit_with_when_to_retry(driven: dict[str, Any]) -> None:
    assert "succeeded" in _scenario(driven, "throttled_first")["result"]
    result = _scenario(driven, "throttled_second")["result"]
    assert re.match(
        r"Error: codeexec is busy or rate-limited \(429 rate_limit_exceeded\): .* Retry after \d+ s\.", result
    )


@pytest.mark.parametrize("name", ["slow_poll", "slow_poll_unstreamed"])
def test_it_polls_a_run_the_server_stopped_waiting_for(driven: dict[str, Any], name: str) -> None:
    scenario = _scenario(driven, name)
    assert "succeeded" in scenario["result"] and "```\ndone\n```" in scenario["result"]
    assert scenario["elapsed_ms"] > RUN_WAIT_MAX_S * 1000
    statuses = _statuses(scenario)
    assert ("node: running…", False) in statuses
    assert len(statuses) == len(set(statuses))  # one line per state, not one per poll


def test_it_cuts_long_output_for_the_model(driven: dict[str, Any]) -> None:
    result = _scenario(driven, "long_output")["result"]
    total = len("".join(f"{i}\n" for i in range(2000)))
    assert f"stdout ({total - 300} of {total} characters omitted here):" in result
    assert "\n0\n1\n2\n" in result and "1998\n1999\n```" in result
    assert len(result) < 1000


def test_it_reports_a_go_compile_error(driven: dict[str, Any]) -> None:
    result = _scenario(driven, "go_compile_error")["result"]
    assert "failed: the Go build failed (compiler output in stderr)" in result
    assert "undefined: fmt" in result


# ---- streaming -------------------------------------------------------------------------------------


def _timed_statuses(scenario: dict[str, Any]) -> list[tuple[int, str, bool]]:
    """(ms after the call began, description, done) of each status event, in the order they came."""
    return [
        (at, e["data"]["description"], e["data"]["done"])
        for at, e in zip(scenario["event_times_ms"], scenario["events"], strict=True)
        if e["type"] == "status"
    ]


def test_it_shows_output_in_the_status_line_while_the_program_runs(driven: dict[str, Any]) -> None:
    scenario = _scenario(driven, "progress")
    timed = _timed_statuses(scenario)
    assert [(description, done) for _at, description, done in timed[:-1]] == [
        ("Running python code in codeexec…", False),
        ("python: running…", False),
        ("python: running… last output: step 1", False),
        ("python: running… last output: step 2", False),
    ]
    assert re.fullmatch(r"python: succeeded in \d+ ms", timed[-1][1]) and timed[-1][2] is True
    step_1, step_2, finished = timed[2][0], timed[3][0], timed[-1][0]
    # Each line came as the program printed it: step 1 a pause before step 2 and before the result.
    assert step_2 - step_1 >= (PAUSE_S - 0.5) * 1000, timed
    assert scenario["returned_ms"] - step_1 >= (PAUSE_S - 0.5) * 1000, (timed, scenario["returned_ms"])
    assert step_1 <= step_2 <= finished <= scenario["returned_ms"]
    # Open WebUI saved them on the chat message in that order.
    assert scenario["stored_status_history"] == [e["data"] for e in scenario["events"] if e["type"] == "status"]


@pytest.mark.parametrize("name", ["progress", "hello_python"])
def test_the_result_is_the_same_with_the_stream_valve_off(driven: dict[str, Any], name: str) -> None:
    streamed, unstreamed = _scenario(driven, name), _scenario(driven, f"{name}_unstreamed")
    assert _normalized(streamed["result"]) == _normalized(unstreamed["result"])
    assert streamed["output_status"] == unstreamed["output_status"] == "completed"
    if name == "progress":
        assert "```\nstep 1\nstep 2\n```" in unstreamed["result"]
    # Off, the status line shows states only: the tool waits on the POST and never sees output early.
    unstreamed_statuses = [description for description, _done in _statuses(unstreamed)]
    assert unstreamed_statuses[0] == "Running python code in codeexec…"
    assert unstreamed_statuses[-1].startswith("python: succeeded in ")
    assert not any("last output" in description for description in unstreamed_statuses)


def test_it_cancels_a_streamed_run_at_its_deadline(driven: dict[str, Any], django_db_blocker: Any) -> None:
    from runs.models import Run

    scenario = _scenario(driven, "deadline")
    match = re.fullmatch(
        rf"Error: run (run_\w+) did not finish within {DEADLINE_BUDGET_S} s and was cancelled\.", scenario["result"]
    )
    assert match, scenario["result"]
    assert scenario["output_status"] == "failed"
    # Given up at the deadline, well before the server's own limit would have ended the run.
    assert DEADLINE_BUDGET_S * 1000 <= scenario["elapsed_ms"] < DEADLINE_TIMEOUT_MS, scenario["elapsed_ms"]
    statuses = _statuses(scenario)
    assert ("python: running…", False) in statuses  # it was streaming when the deadline came
    assert statuses[-1] == ("codeexec: gave up waiting", True)
    with django_db_blocker.unblock():
        run = Run.objects.get(public_id=match.group(1))
        deadline = time.monotonic() + 30
        while not run.is_terminal and time.monotonic() < deadline:  # the worker kills the sandbox
            time.sleep(0.2)
            run.refresh_from_db()
    assert run.status == "cancelled" and run.error_code == "cancelled", (run.status, run.error_code)


@pytest.mark.parametrize("name", ["stream_cut", "stream_garbage"])
def test_a_broken_stream_falls_back_to_polling(driven: dict[str, Any], stream_proxy: StreamProxy, name: str) -> None:
    scenario = _scenario(driven, name)
    result = scenario["result"]
    assert re.match(r"Ran python \S+ in \d+ ms: succeeded, exit code 0\.", result), result
    assert "stdout:\n```\nbefore\nafter\n```" in result
    assert scenario["output_status"] == "completed"
    seen = stream_proxy.seen(name.removeprefix("stream_"))
    assert seen[0] == ("POST", "/v1/runs")
    polls = [path for method, path in seen[1:] if method == "GET" and path.startswith("/v1/runs/run_")]
    assert polls and len(set(polls)) == 1, seen  # what the stream did not finish, GET /v1/runs/{id} did
    assert _statuses(scenario)[-1][0].startswith("python: succeeded")


def test_it_records_whose_chat_ran_the_code(driven: dict[str, Any], django_db_blocker: Any) -> None:
    from runs.models import Run

    with django_db_blocker.unblock():
        metadata = [run.metadata for run in Run.objects.filter(owner__label="alice")]
    assert metadata and all(m["client"] == "open-webui" and m["openwebui_user_id"] for m in metadata)


def test_the_integration_guide_offers_the_same_function(driven: dict[str, Any]) -> None:
    """docs/integrations.md's ready-to-paste schema matches what Open WebUI builds from the tool."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    block = re.search(r"```json\n(\{\n  \"type\": \"function\".*?)\n```", text, re.S)
    assert block, "no OpenAI function schema in docs/integrations.md"
    documented = json.loads(block.group(1))["function"]
    (built,) = driven["specs"]
    assert documented["name"] == built["name"]
    assert documented["parameters"]["required"] == built["parameters"]["required"]
    assert (
        documented["parameters"]["properties"]["language"]["enum"]
        == built["parameters"]["properties"]["language"]["enum"]
    )
    assert set(documented["parameters"]["properties"]) == set(built["parameters"]["properties"])


def _guide_handler(live_stack: LiveStack, key: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The first Python block of docs/integrations.md, run as a reader would paste it."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "no Python handler in docs/integrations.md"
    monkeypatch.setenv("CODEEXEC_URL", live_stack.url)
    monkeypatch.setenv("CODEEXEC_KEY", key)
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "docs/integrations.md", "exec"), namespace)
    return namespace["run_code"]


def test_the_integration_guides_handler_works(
    live_stack: LiveStack, api_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_code = _guide_handler(live_stack, api_keys["alice"], monkeypatch)
    assert (
        run_code({"language": "python", "code": "print(6 * 7)"})
        == "status: succeeded, exit code 0\nstdout:\n42\n\nstderr: (empty)"
    )
    slow = run_code({"language": "ruby", "code": f"sleep {RUN_WAIT_MAX_S + 1}\nputs 'late'"})  # 202, then polled
    assert slow.startswith("status: succeeded, exit code 0\nstdout:\nlate")
    wrong = _guide_handler(live_stack, "ck-not-a-key", monkeypatch)({"language": "python", "code": "print(1)"})
    assert wrong.startswith("Error: codeexec refused the run (401 invalid_api_key): ")


# ---- the transcript in docs/openwebui.md ----------------------------------------------------------
def _normalized(text: str) -> str:
    """Without what changes from run to run: links, ids, times, sizes."""
    text = re.sub(r"\(http://127\.0\.0\.1:\d+/v1/files/[^)]*\)", "(LINK)", text)
    text = re.sub(r"call_[0-9a-f]+", "call_ID", text)
    return re.sub(r"\d+", "N", text)


def test_the_guides_transcript_is_current(driven: dict[str, Any]) -> None:
    """docs/openwebui.md holds the transcript this test writes; when the tool's answers change, copy
    test-artifacts/openwebui/transcript.md between its transcript markers."""
    guide = (ROOT / "docs" / "openwebui.md").read_text()
    start, end = guide.index("<!-- transcript:start -->"), guide.index("<!-- transcript:end -->")
    in_guide = _normalized(guide[start:end])
    assert "**Scripted**" in in_guide
    written = _normalized((ARTIFACTS / "openwebui" / "transcript.md").read_text())
    assert written.strip() in in_guide, (
        "docs/openwebui.md's transcript is stale: copy test-artifacts/openwebui/transcript.md"
    )


TRANSCRIPT_ANSWERS = {  # the scripted assistant's reply after each tool result
    "progress": "It printed step 1, then step 2 about 1.5 s later; the status line showed each as it came.",
    "plot_png": "sin(x) peaks at x ≈ 1.5787 (π/2), where it reaches 1.0. The plot is above; the data is in sine.csv.",
    "timeout": "The loop never ends, so codeexec stopped it at the 1-second limit; nothing was printed.",
    "wrong_key": "I could not run the code: codeexec rejected the tool's API key. An admin needs to fix the key.",
}


def _write_transcript(out: dict[str, Any]) -> None:
    fence = "```"
    lines = [
        "<!-- Written by tests/openwebui/test_openwebui_tool.py (test-artifacts/openwebui/transcript.md). -->",
        f"Open WebUI {out['open_webui_version']}, native function calling, the `codeexec` tool. **Scripted**: no",
        "model was reachable, so the user's questions, the assistant's tool calls and its replies are fixed by the",
        "test. Each call went through Open WebUI's `get_tools` → `execute_tool_call` → `process_tool_result` to a",
        "live codeexec: the events and the tool results are what the tool and Open WebUI produced (links point at",
        "the test's server; the test shortens the image's data: URL).",
        "",
    ]
    for name, answer in TRANSCRIPT_ANSWERS.items():
        scenario = out["by_name"][name]
        arguments = scenario["arguments"]
        lines += [
            "---",
            "",
            f"**User:** {scenario['question']}",
            "",
            f"**Assistant** (scripted) calls `run_code` (`{scenario['tool_call']['id']}`) with "
            f'`language: "{arguments["language"]}"` and this `code`:',
            "",
            f"{fence}{arguments['language']}",
            arguments["code"].rstrip("\n"),
            fence,
            "",
            "Events from the tool (`__event_emitter__`), as the chat receives them (ms after the call began):",
            "",
            f"{fence}text",
            *[
                f"{at} ms: {json.dumps(_shown(event), ensure_ascii=False)}"
                for at, event in zip(scenario["event_times_ms"], scenario["events"], strict=True)
            ],
            fence,
            "",
            f"Tool result, as Open WebUI passes it back to the model (call status `{scenario['output_status']}`):",
            "",
            "````text",
            scenario["result"],
            "````",
            "",
            f"**Assistant** (scripted): {answer}",
            "",
        ]
    path = ARTIFACTS / "openwebui" / "transcript.md"
    path.write_text("\n".join(lines))


def _shown(event: dict[str, Any]) -> dict[str, Any]:
    """A files event as the chat got it, its data: URL shortened (the driver reports size and hash)."""
    if event["type"] != "files":
        return event
    files = [
        {**f, "url": f"{f['url']['data_url']} ({f['url']['bytes']} bytes)"} if isinstance(f.get("url"), dict) else f
        for f in event["data"]["files"]
    ]
    return {**event, "data": {**event["data"], "files": files}}
