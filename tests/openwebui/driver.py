"""Calls openwebui_tool.py through Open WebUI's own code. Run by the Open WebUI virtualenv's python
(scripts/openwebui-venv.sh), not the project's: `driver.py PLAN.json OUT.json`.

Environment (set by tests/openwebui/test_openwebui_tool.py): FROM_INIT_PY=true, WEBUI_SECRET_KEY, and
DATA_DIR, a throwaway directory: importing open_webui.config migrates a fresh SQLite database there.

What Open WebUI does when an admin adds a tool (POST /api/v1/tools/create), sets Valves
(/api/v1/tools/id/{id}/valves/update, /valves/user/update) and a model calls it with native function
calling (open_webui/utils/middleware.py), done here with the same functions:

  load_tool_module_by_id  -> get_tool_specs  -> Tools.insert_new_tool
  get_tools (reads the tool and user rows, sets Valves/UserValves, binds __user__, __event_emitter__)
  -> execute_tool_call (the tool call as a model sends it) -> process_tool_result

The events the tool emits go to a recorder that notes when each came (ms after the call began) and
forwards them to Open WebUI's own socket emitter (get_event_emitter), which stores `files` and
`status` on the chat message as for a browser chat.
The plan (JSON): {"tool_path", "valves", "scenarios": [{"name", "arguments", "valves"?, "user_valves"?,
"tool_globals"?}]}; `tool_globals` sets constants of the loaded tool module for one scenario (e.g. a
shorter DEADLINE_SLACK_S), restored afterwards.
The result (JSON): the specs, Valves schemas and, per scenario, what the model and the chat receive.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import json
import sys
import time
import traceback
import uuid
from types import SimpleNamespace
from typing import Any

TOOL_ID = "codeexec"


def _summarize(value: Any) -> Any:
    """data: URLs replaced by what they hold (type, size, hash, PNG signature), so the JSON stays small."""
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value:
        head, encoded = value.split(";base64,", 1)
        raw = base64.b64decode(encoded)
        return {
            "data_url": f"{head};base64,{encoded[:16]}…",
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "png_signature": raw[:8] == b"\x89PNG\r\n\x1a\n",
        }
    if isinstance(value, dict):
        return {key: _summarize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_summarize(item) for item in value]
    return value


def _open_webui() -> SimpleNamespace:
    """Open WebUI's own functions and tables, by the names its code uses (importing config migrates the
    database in DATA_DIR)."""
    import open_webui.config  # noqa: F401
    from fastapi import FastAPI
    from open_webui.models.chats import ChatForm, Chats
    from open_webui.models.tools import ToolForm, ToolMeta, Tools
    from open_webui.models.users import Users
    from open_webui.socket.main import get_event_emitter
    from open_webui.utils.middleware import _is_tool_result_error, execute_tool_call, process_tool_result
    from open_webui.utils.plugin import (
        get_tools_cache,
        load_tool_module_by_id,
        replace_imports,
        resolve_valves_schema_options,
    )
    from open_webui.utils.tools import get_tool_specs, get_tools
    from starlette.requests import Request

    return SimpleNamespace(
        FastAPI=FastAPI,
        Request=Request,
        ChatForm=ChatForm,
        Chats=Chats,
        ToolForm=ToolForm,
        ToolMeta=ToolMeta,
        Tools=Tools,
        Users=Users,
        get_event_emitter=get_event_emitter,
        is_tool_result_error=_is_tool_result_error,
        execute_tool_call=execute_tool_call,
        process_tool_result=process_tool_result,
        load_tool_module_by_id=load_tool_module_by_id,
        get_tools_cache=get_tools_cache,
        replace_imports=replace_imports,
        resolve_valves_schema_options=resolve_valves_schema_options,
        get_tool_specs=get_tool_specs,
        get_tools=get_tools,
    )


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    ow = _open_webui()
    imported = time.monotonic()

    # A user, as sign-up makes one.
    user = await ow.Users.insert_new_user(id=str(uuid.uuid4()), name="Alice", email="alice@example.com", role="user")
    assert user is not None

    # POST /api/v1/tools/create
    with open(plan["tool_path"], encoding="utf-8") as f:
        content = ow.replace_imports(f.read())
    tool_module, frontmatter, _ = await ow.load_tool_module_by_id(TOOL_ID, content=content)
    specs = ow.get_tool_specs(tool_module)
    form = ow.ToolForm(
        id=TOOL_ID,
        name=frontmatter.get("title", TOOL_ID),
        content=content,
        meta=ow.ToolMeta(
            description=frontmatter.get("description"),
            manifest=frontmatter,
            has_user_valves=hasattr(tool_module, "UserValves"),
        ),
    )
    await ow.Tools.insert_new_tool(user.id, form, specs, module=tool_module)

    request = ow.Request(
        {"type": "http", "app": ow.FastAPI(), "method": "POST", "path": "/api/chat/completions", "headers": []}
    )
    out: dict[str, Any] = {
        "open_webui_version": importlib.metadata.version("open-webui"),
        "frontmatter": frontmatter,
        "specs": specs,
        # GET /api/v1/tools/id/{id}/valves/spec and /valves/user/spec
        "valves_schema": ow.resolve_valves_schema_options(
            tool_module.Valves, tool_module.Valves.model_json_schema(), user
        ),
        "user_valves_schema": ow.resolve_valves_schema_options(
            tool_module.UserValves, tool_module.UserValves.model_json_schema(), user
        ),
        "scenarios": [],
    }
    setup_done = time.monotonic()

    for scenario in plan["scenarios"]:
        record: dict[str, Any] = {"name": scenario["name"], "arguments": scenario["arguments"]}
        out["scenarios"].append(record)
        try:
            await _call(ow, record, scenario, plan["valves"], user, request, tool_module)
        except Exception:
            record["driver_error"] = traceback.format_exc()
    out["timings_s"] = {
        "import": round(imported - started, 2),
        "setup": round(setup_done - imported, 2),
        "scenarios": round(time.monotonic() - setup_done, 2),
    }
    return out


async def _call(
    ow: SimpleNamespace,
    record: dict[str, Any],
    scenario: dict[str, Any],
    base_valves: dict[str, Any],
    user: Any,
    request: Any,
    tool_module: Any,
) -> None:
    # /api/v1/tools/id/{id}/valves/update and /valves/user/update: validated by the tool's classes first.
    valves = {k: v for k, v in {**base_valves, **scenario.get("valves", {})}.items() if v is not None}
    await ow.Tools.update_tool_valves_by_id(TOOL_ID, tool_module.Valves(**valves).model_dump(exclude_unset=True))
    user_valves = tool_module.UserValves(**scenario.get("user_valves", {})).model_dump(exclude_unset=True)
    await ow.Tools.update_user_valves_by_id_and_user_id(TOOL_ID, user.id, user_valves)

    # A saved chat with the user's question and the assistant message the tool call belongs to.
    chat_id, user_message_id, message_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    question = record["question"] = scenario.get("question", "Run this for me.")
    history = {
        "currentId": message_id,
        "messages": {
            user_message_id: {"id": user_message_id, "role": "user", "content": question, "childrenIds": [message_id]},
            message_id: {"id": message_id, "parentId": user_message_id, "role": "assistant", "content": ""},
        },
    }
    await ow.Chats.insert_new_chat(chat_id, user.id, ow.ChatForm(chat={"title": record["name"], "history": history}))
    metadata: dict[str, Any] = {
        "user_id": user.id,
        "chat_id": chat_id,
        "message_id": message_id,
        "session_id": None,
        "tool_ids": [TOOL_ID],
        "params": {"function_calling": "native"},
        "files": [],
    }
    socket_emitter = await ow.get_event_emitter(metadata)
    events: list[dict[str, Any]] = []
    event_times: list[float] = []

    async def event_emitter(event: dict[str, Any]) -> None:
        event_times.append(time.monotonic())
        events.append(json.loads(json.dumps(event)))
        await socket_emitter(event)

    model = {"id": "scripted", "name": "scripted", "info": {"meta": {"capabilities": {"citations": True}}}}
    messages = [{"role": "user", "content": question}]
    extra_params = {
        "__event_emitter__": event_emitter,
        "__event_call__": None,
        "__user__": user.model_dump(),
        "__metadata__": metadata,
        "__request__": request,
        "__model__": model,
        "__chat_id__": chat_id,
        "__message_id__": message_id,
        "__messages__": messages,
        "__files__": [],
    }
    tools = await ow.get_tools(request, [TOOL_ID], user, extra_params)
    metadata["tools"] = tools
    form_data = {
        "model": model["id"],
        "messages": messages,
        "tools": [{"type": "function", "function": tool["spec"]} for tool in tools.values()],
    }
    record["model_tools"] = form_data["tools"]
    tool_call = {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": "run_code", "arguments": json.dumps(scenario["arguments"])},
    }
    record["tool_call"] = tool_call

    # The module Open WebUI runs the tool from (get_tools loaded and cached it).
    tool_globals = type(ow.get_tools_cache(request)[TOOL_ID]).run_code.__globals__
    saved = {name: tool_globals[name] for name in scenario.get("tool_globals", {})}
    tool_globals.update(scenario.get("tool_globals", {}))
    started = time.monotonic()
    try:
        params, result, _tool, tool_type, direct_tool = await ow.execute_tool_call(form_data, metadata, None, tool_call)
    finally:
        returned = time.monotonic()
        tool_globals.update(saved)
    record["returned_ms"] = round((returned - started) * 1000)
    record["raw_result_type"] = type(result).__name__
    result, files, embeds = await ow.process_tool_result(
        request, "run_code", result, tool_type, direct_tool, metadata, user
    )
    record["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    record["params"] = params
    record["result"] = result
    record["output_status"] = "failed" if ow.is_tool_result_error(result) else "completed"
    record["result_files"] = _summarize(files)
    record["embeds"] = embeds
    record["events"] = _summarize(events)
    record["event_times_ms"] = [round((at - started) * 1000) for at in event_times]
    record["stored_files"] = _summarize(await ow.Chats.get_message_metadata(chat_id, message_id, "files"))
    message = await ow.Chats.get_message_by_id_and_message_id(chat_id, message_id)
    record["stored_status_history"] = (message or {}).get("statusHistory", [])


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        loaded_plan = json.load(f)
    result = asyncio.run(main(loaded_plan))
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
