"""One structured log line per HTTP request and per MCP tool call, from a real server (VIBE_LOG_JSON)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
from websockets.asyncio.client import connect

from tests.support import ServerProcess, call, call_error, free_port, launch, mcp_client, start_server

SECRET_BODY = "TOP-SECRET-BODY-a8f3"


def lines(server: ServerProcess) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))  # every structured line is one JSON object
    return found


async def test_request_and_tool_call_lines(tmp_path: Path) -> None:
    server = start_server(tmp_path, extra_env={"VIBE_LOG_JSON": "true"})
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}", "X-Request-ID": "req-logs-1"}
        r = httpx2.get(
            f"{server.url}/api/v1/projects/default/issues?query=hidden-query", headers=headers, timeout=30
        )
        assert r.status_code == 200, r.text
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="ada", role="coordinator", project="default")
            await call(client, "register_agent", name="bob", role="worker")
            await call(client, "send_message", subject="plan", body=SECRET_BODY, to=["bob"], agent="ada")
            assert "[not_found]" in await call_error(client, "claim_issue", id=424242, agent="bob")
            # A name that is not a name is not logged as one.
            await call_error(client, "claim_issue", agent="bob\nFAKE LINE")
        socket_url = server.url.replace("http://", "ws://") + "/api/v1/events/ws"
        async with connect(
            socket_url, additional_headers={"Authorization": f"Bearer {server.admin_token}"}
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
        log = server.log()
    finally:
        server.stop()

    found = lines(server)
    rest = [x for x in found if x.get("event") == "http_request" and x.get("request_id") == "req-logs-1"]
    assert len(rest) == 1, found
    assert rest[0]["route"] == "/api/v1/projects/{project}/issues"
    assert rest[0]["method"] == "GET" and rest[0]["status"] == 200 and rest[0]["project"] == "default"
    assert rest[0]["role"] == "admin" and isinstance(rest[0]["credential_id"], int)
    assert isinstance(rest[0]["latency_ms"], float | int) and rest[0]["level"] == "info"

    # A WebSocket's line, when it closes, names its route (a plain Starlette route: api/feeds).
    sockets = [x for x in found if x.get("event") == "http_request" and x.get("method") == "WS"]
    assert [(x["route"], x["status"], x["role"]) for x in sockets] == [("/api/v1/events/ws", 101, "admin")]

    # Each tool call is told on its /mcp request's line: one line per call, not two.
    tools = [x for x in found if "tool" in x]
    assert tools and all(x["event"] == "http_request" and x["route"] == "/mcp" for x in tools), tools
    by_tool = {(x["tool"], x["outcome"]): x for x in tools}
    registered = [x for x in tools if x["tool"] == "register_agent"]
    assert [x.get("project") for x in registered] == ["default", None]
    sent = by_tool[("send_message", "ok")]
    assert sent["agent"] == "ada" and isinstance(sent["tool_ms"], float | int)
    assert by_tool[("claim_issue", "not_found")]["agent"] == "bob"
    assert "agent" not in by_tool[("claim_issue", "invalid_input")]
    # Every tool call's line has its own request id.
    assert len({x["request_id"] for x in tools}) == len(tools)

    # No secrets, no message bodies, no query strings, no forged lines. (The first-start line shows
    # the admin token once, by design; the other log lines never do.)
    assert server.admin_token
    assert [x["event"] for x in found if "admin_token_secret" in x] == ["admin_token_created"]
    structured = "\n".join(
        line for line in log.splitlines() if line.startswith("{") and "admin_token_created" not in line
    )
    assert server.admin_token not in structured and server.admin_token[:16] not in structured
    assert SECRET_BODY not in log
    assert "hidden-query" not in log
    assert "FAKE LINE" not in log


def test_with_json_logs_every_line_a_server_writes_is_json(tmp_path: Path) -> None:
    """VIBE_LOG_JSON=true: the start-up lines (the database, the allowed-hosts warning, the address
    served) and the first-start admin token are JSON lines too, so a log pipeline reads every line;
    the token is in one line only, in a field that names it a secret, and it works."""
    port = free_port()
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "data"), "VIBE_PORT": str(port)}
    # 127.0.0.2: beyond loopback as far as the allowed-hosts warning goes, yet reachable only here.
    env.update({"VIBE_HOST": "127.0.0.2", "VIBE_LOG_JSON": "true"})
    env.pop("VIBE_ALLOWED_HOSTS", None)
    argv = [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate"]
    server = launch(argv, env, tmp_path / "server.log", f"http://127.0.0.2:{port}")
    try:
        written = [line for line in server.log().splitlines() if line.strip()]
        found = [json.loads(line) for line in written]  # every line, none plain
        by_event = {x["event"]: x for x in found}
        created = by_event["admin_token_created"]
        secret = created["admin_token_secret"]
        answer = httpx2.get(
            f"{server.url}/api/v1/projects", headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
    assert [line for line in written if secret in line] == [written[found.index(created)]]
    assert created["level"] == "warning" and created["mcp_url"] == f"http://127.0.0.2:{port}/mcp"
    warned = by_event["allowed_hosts_unset"]
    assert warned["level"] == "warning" and warned["host"] == "127.0.0.2"
    assert "DNS-rebinding" in warned["message"]
    assert by_event["server_starting"]["database"] == str(tmp_path / "data" / "vibe.db")
    started = by_event["server_started"]
    assert started["url"] == f"http://127.0.0.2:{port}" and started["mcp_url"] == created["mcp_url"]
