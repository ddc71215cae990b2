"""`vibe-ensemble mcp --url`: stdio clients (the official SDK's) share one running server through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.support import (
    PIPE_HELLO,
    UNREADABLE,
    ServerProcess,
    call,
    call_error,
    check_unreadable_answered,
    free_port,
    mcp_client,
    run_cli,
)

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


@asynccontextmanager
async def bridged(url: str, token: str, errlog: Path, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's stdio client, running `vibe-ensemble mcp --url URL` with the token in VIBE_TOKEN."""
    env = {**os.environ, "VIBE_TOKEN": token}
    params = StdioServerParameters(command=CLI, args=["mcp", "--url", url], env=env)
    with errlog.open("a") as log:
        async with Client(stdio_client(params, errlog=log), mode=mode) as client:
            yield client


async def worker_token(server: ServerProcess, agent: str) -> str:
    """A worker token bound to `agent` (registered first), made by `token create` on the server's database."""
    async with mcp_client(server.mcp_url, server.admin_token) as admin:
        await call(admin, "register_agent", name=agent)
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    argv = [CLI, "token", "create", "--role", "worker", "--project", "default", "--agent", agent]
    done = subprocess.run(
        [*argv, "--database-url", db], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def bridge_cli(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VIBE_TOKEN": token}
    return subprocess.run(
        [CLI, "mcp", *args], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_two_stdio_agents_share_one_server_through_the_bridge(
    server: ServerProcess, tmp_path: Path, mode: str
) -> None:
    alice, bob = await worker_token(server, "alice"), await worker_token(server, "bob")
    errlog = tmp_path / "bridge.log"
    async with (
        bridged(server.mcp_url, alice, errlog, mode=mode) as a,
        bridged(server.mcp_url, bob, errlog, mode=mode) as b,
    ):
        assert "claim_issue" in {t.name for t in (await a.list_tools()).tools}
        issue = await call(a, "create_issue", title="bridged", agent="alice")
        claimed = await call(b, "claim_issue", agent="bob")
        assert (claimed["id"], claimed["assignee"]) == (issue["id"], "bob")
        # each bridge acts as its own token: bob's token cannot act as alice
        assert "alice" in await call_error(b, "heartbeat", agent="alice")
        assert "[invalid_input] title: must not be empty" in await call_error(a, "create_issue", title="")
        prompt = await a.get_prompt("worker_briefing", {})
        assert prompt.messages
        briefing = types.PromptReference(name="worker_briefing")
        completed = await b.complete(briefing, {"name": "agent", "value": "b"})
        assert completed.completion.values == ["bob"]
        # alice's token reads only alice's briefing: bob's name is not hers to complete
        assert (await a.complete(briefing, {"name": "agent", "value": "b"})).completion.values == []
        board = await a.read_resource("vibe://projects/default/board")
        assert "bridged" in board.contents[0].text  # type: ignore[union-attr]
    # what the stdio clients did happened on the server, seen by a direct HTTP client
    async with mcp_client(server.mcp_url, server.admin_token) as admin:
        seen = await call(admin, "get_issue", id=issue["id"])
        assert seen["issue"]["assignee"] == "bob"
    assert alice not in errlog.read_text() and bob not in errlog.read_text()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_request_while_the_server_is_down_is_answered_with_the_cause(
    server: ServerProcess, tmp_path: Path, mode: str
) -> None:
    """On either protocol era the same client session goes on after the restart: the server's
    HTTP keeps no session, so there is none to lose."""
    token = await worker_token(server, f"carol-{mode}")
    async with bridged(server.mcp_url, token, tmp_path / "bridge.log", mode=mode) as client:
        await call(client, "heartbeat", agent=f"carol-{mode}")
        server.stop()
        with pytest.raises(MCPError, match=r"cannot reach http://127\.0\.0\.1:\d+/mcp"):
            await client.call_tool("heartbeat", {"agent": f"carol-{mode}"})
        server.restart()
        await call(client, "heartbeat", agent=f"carol-{mode}")  # the bridge kept running
    assert token not in (tmp_path / "bridge.log").read_text()


def test_the_bridge_refuses_to_start_with_one_line_saying_why(server: ServerProcess) -> None:
    unknown = "vibe_" + "Q" * 43
    refused = bridge_cli("--url", server.mcp_url, token=unknown)
    assert refused.returncode == 1
    assert "refused the token: [unauthenticated] invalid, expired or revoked token" in refused.stderr
    assert unknown not in refused.stdout + refused.stderr

    down = bridge_cli("--url", f"http://127.0.0.1:{free_port()}/mcp", token=unknown)
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:" in down.stderr
    assert "is the server running?" in down.stderr

    wrong_path = bridge_cli("--url", server.url + "/nope", token=server.admin_token)
    assert wrong_path.returncode == 1 and "no MCP endpoint at" in wrong_path.stderr

    for bad in ("ftp://example.com/mcp", "127.0.0.1:8080", "http://user:pw@127.0.0.1/mcp"):
        invalid = bridge_cli("--url", bad, token=unknown)
        assert invalid.returncode == 2, invalid.stderr
        assert "--url must" in invalid.stderr

    mixed = bridge_cli("--url", server.mcp_url, "--database-url", "sqlite+aiosqlite:///x.db", token=unknown)
    assert mixed.returncode == 2 and "--url forwards to a server" in mixed.stderr
    for failed in (refused, down, wrong_path, mixed):
        assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_a_server_address_without_a_path_means_its_mcp_endpoint(server: ServerProcess) -> None:
    """`--url http://host:port` is the same as `…/mcp`; the probe passes and stdin's end ends the bridge."""
    done = bridge_cli("--url", server.url, token=server.admin_token)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_the_token_file_connect_writes_is_read_as_the_token(server: ServerProcess, tmp_path: Path) -> None:
    """`--token-file .vibe-ensemble/token.env` (a comment, then VIBE_ENSEMBLE_TOKEN=…) and a file with
    the token alone both start the bridge; a file or VIBE_TOKEN that holds no token is refused in one
    line that names it and never shows what it holds."""
    repo = tmp_path / "repo"
    repo.mkdir()
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    argv = [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo), "--database-url", db]
    connected = run_cli([*argv, "--url", server.mcp_url], timeout=120)
    assert connected.returncode == 0, connected.stderr
    env_file = repo / ".vibe-ensemble" / "token.env"
    secret = env_file.read_text().splitlines()[-1].partition("=")[2]
    bare = tmp_path / "token"
    bare.write_text(secret + "\n")
    for path in (env_file, bare):
        done = bridge_cli("--url", server.mcp_url, "--token-file", str(path), token="")
        assert done.returncode == 0, done.stderr
        assert done.stderr == "" and done.stdout == ""

    notes = tmp_path / "notes.txt"
    notes.write_text(f"my token is below\n{secret}\n")
    refused = bridge_cli("--url", server.mcp_url, "--token-file", str(notes), token="")
    [line] = refused.stderr.splitlines()
    assert refused.returncode == 2 and line.startswith(
        f"error: --token-file {notes} holds no Vibe Ensemble token"
    )
    assert "my token" not in line and secret[5:] not in line

    # A token with what a header cannot carry (here a second line) would be quoted back by the HTTP
    # library's error: it is refused before any request, and not shown.
    for token in (f"{secret}\nsecond line", f"Bearer {secret}"):
        refused = bridge_cli("--url", server.mcp_url, token=token)
        [line] = refused.stderr.splitlines()
        assert refused.returncode == 2 and line.startswith("error: VIBE_TOKEN is not a Vibe Ensemble token")
        assert secret[5:] not in refused.stderr + refused.stdout


def test_mcp_on_the_servers_sqlite_file_names_the_way_through_the_server(server: ServerProcess) -> None:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    done = bridge_cli("--database-url", db, token=server.admin_token)
    [line] = done.stderr.splitlines()
    assert done.returncode == 1 and "is already in use by another Vibe Ensemble server" in line
    # the server's own pid and MCP URL, from its lock file: not a URL guessed from this process's settings
    assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in line
    assert "go through that server instead" in line and f" mcp --url {server.mcp_url}`" in line
    assert "HOST:PORT" not in line and ":8080" not in line


def piped(url: str, token: str, messages: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Run the bridge with `messages` written to its stdin, which then closes; its answers by id."""
    env = {**os.environ, "VIBE_TOKEN": token}
    lines = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run(
        [CLI, "mcp", "--url", url], input=lines, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}


def test_requests_written_before_stdin_closes_are_all_answered(server: ServerProcess) -> None:
    """A client that writes its requests and closes its end of the pipe (as `printf … | vibe-ensemble
    mcp --url …` does) gets an answer to each, on the older protocol and on 2026-07-28: the bridge
    stops once they are answered (it stopped at once, dropping the answers still on their way)."""

    def call(id_: Any, tool: str, arguments: dict[str, Any], **params: Any) -> dict[str, Any]:
        body = {"name": tool, "arguments": arguments, **params}
        return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": body}

    legacy = piped(
        server.mcp_url,
        server.admin_token,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": PIPE_HELLO},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            call(2, "register_agent", {"name": "piped"}),
            call(3, "list_agents", {"role": "observer"}),  # (no order among them: each is its own POST)
            call(4, "get_issue", {"id": "1"}),
        ],
    )
    assert sorted(legacy) == [1, 2, 3, 4], legacy
    assert legacy[2]["result"]["structuredContent"]["name"] == "piped"
    assert legacy[3]["result"]["structuredContent"] == {"result": []}
    assert legacy[4]["result"]["isError"] and "id: Input should be a valid integer" in str(legacy[4])
    meta = {types.PROTOCOL_VERSION_META_KEY: "2026-07-28", types.CLIENT_CAPABILITIES_META_KEY: {}}
    modern = piped(
        server.mcp_url,
        server.admin_token,
        [
            call("a", "list_agents", {}, _meta=meta),
            {"jsonrpc": "2.0", "id": "b", "method": "ping", "params": {"_meta": meta}},
        ],
    )
    assert sorted(modern) == ["a", "b"], modern
    assert "piped" in [agent["name"] for agent in modern["a"]["result"]["structuredContent"]["result"]]


def test_a_line_that_is_no_json_rpc_message_is_answered(server: ServerProcess) -> None:
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": PIPE_HELLO}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        *UNREADABLE,
    ]
    env = {**os.environ, "VIBE_TOKEN": server.admin_token}
    done = subprocess.run(
        [CLI, "mcp", "--url", server.mcp_url],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    check_unreadable_answered(done.stdout)
