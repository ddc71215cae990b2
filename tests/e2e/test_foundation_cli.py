"""The command line: token management against a running server, stdio MCP, serving on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.support import (
    PIPE_HELLO,
    TOKEN_RE,
    UNREADABLE,
    ServerProcess,
    call,
    call_error,
    check_unreadable_answered,
    free_port,
    launch,
    mcp_client,
    run_cli,
    start,
    wait_until,
)

from .test_foundation_mcp import CORE_TOOLS

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def cli(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `vibe-ensemble ARGS…`; with `ok`, fail the test unless it exits 0."""
    done = run_cli([CLI, *args], env={**(env or os.environ), "COLUMNS": "200"})
    if ok:
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_token_create_list_revoke_against_a_running_server(server: ServerProcess) -> None:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    secret = cli(
        "token",
        "create",
        "--role",
        "worker",
        "--project",
        "default",
        "--agent",
        "w1",
        "--label",
        "ci-bot",
        "--database-url",
        db,
    ).stdout.strip()
    assert TOKEN_RE.search(f"token: {secret}"), secret

    worker = httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    admin = httpx2.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=10
    )
    with worker, admin:
        assert worker.post("/api/v1/projects/default/agents", json={}).json()["name"] == "w1"

        listing = cli("token", "list", "--database-url", db).stdout
        row = next(line for line in listing.splitlines() if secret[:12] in line)
        assert "worker" in row
        assert "ci-bot" in row
        assert "w1" in row
        assert secret not in listing  # only the prefix is ever shown

        token_id = next(t["id"] for t in admin.get("/api/v1/tokens").json() if t["prefix"] == secret[:12])
        revoked = cli("token", "revoke", str(token_id), "--database-url", db)
        assert f"revoked token {token_id}" in revoked.stderr
        again = cli("token", "revoke", str(token_id), "--database-url", db)  # idempotent, and says so
        assert again.returncode == 0 and f"token {token_id} was already revoked (" in again.stderr

        # The CLI is another process, as another replica would be: the running server stops accepting
        # the token within its credential cache's bound (VIBE_CREDENTIAL_CACHE_S, 5 s by default;
        # docs/performance.md), then refuses it on both doors.
        wait_until(
            lambda: worker.get("/api/v1/projects/default/issues").status_code == 401,
            timeout=5 + 10,
            what="the revoked token to be refused",
        )
        refused = worker.get("/api/v1/projects/default/issues")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        mcp = worker.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert mcp.status_code == 401
        listed = next(t for t in admin.get("/api/v1/tokens").json() if t["id"] == token_id)
        assert listed["revoked_at"] is not None

    unknown = cli("token", "revoke", "999", "--database-url", db, ok=False)
    assert unknown.returncode == 1
    assert "token 999 does not exist" in unknown.stderr


def database_with_admin(path: Path) -> tuple[str, str]:
    """A migrated SQLite database at `path` (its URL) and an admin token made on it."""
    db = f"sqlite+aiosqlite:///{path}"
    cli("migrate", "--database-url", db)
    return db, cli("token", "create", "--role", "admin", "--database-url", db).stdout.strip()


def test_token_list_shows_each_tokens_tool_profile(tmp_path: Path) -> None:
    """`token create --tool-profile full` is stored, and `token list` says so (a table column and
    `tool_profile` in --json; a token without its own is served the server's, shown as `default`)."""
    db, _ = database_with_admin(tmp_path / "profiles.db")
    full = cli(
        "token",
        "create",
        "--role",
        "admin",
        "--label",
        "wide",
        "--tool-profile",
        "full",
        "--database-url",
        db,
    )
    core = cli(
        "token",
        "create",
        "--role",
        "viewer",
        "--label",
        "narrow",
        "--tool-profile",
        "core",
        "--database-url",
        db,
    )
    table = cli("token", "list", "--database-url", db).stdout
    header = next(line for line in table.splitlines() if "prefix" in line)
    assert "tools" in header.split()
    rows = {
        label: line.split() for line in table.splitlines() for label in ("wide", "narrow") if label in line
    }
    assert "full" in rows["wide"] and "core" in rows["narrow"]
    listed = json.loads(cli("token", "list", "--json", "--database-url", db).stdout)
    by_prefix = {t["prefix"]: t["tool_profile"] for t in listed}
    assert by_prefix[full.stdout.strip()[:12]] == "full" and by_prefix[core.stdout.strip()[:12]] == "core"
    assert sorted(by_prefix.values(), key=str) == [None, "core", "full"]  # the first admin's: null
    default_row = next(line for line in table.splitlines() if "admin" in line and "wide" not in line)
    assert "default" in default_row.split()


async def test_stdio_mcp(tmp_path: Path) -> None:
    db, token = database_with_admin(tmp_path / "stdio.db")
    params = StdioServerParameters(
        command=CLI, args=["mcp", "--database-url", db], env={**os.environ, "VIBE_TOKEN": token}, cwd=tmp_path
    )
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names >= CORE_TOOLS
        await call(client, "register_agent", name="local")
        issue = await call(client, "create_issue", title="from stdio", agent="local")
        claimed = await call(client, "claim_issue", agent="local")
        assert (claimed["id"], claimed["assignee"]) == (issue["id"], "local")
        closed = await call(client, "close_issue", id=issue["id"], resolution="done", agent="local")
        assert closed["issue"]["status"] == "done"
        assert "[invalid_input] title: must not be empty" in await call_error(
            client, "create_issue", title=""
        )
    # a token the database does not know is refused before anything is served
    refused = cli("mcp", "--token", "vibe_" + "Q" * 43, "--database-url", db, ok=False)
    assert refused.returncode == 1
    assert "invalid, expired or revoked token" in refused.stderr
    # the flag works, with a warning; a token file is the quiet way
    assert "warning: --token puts the token in the process table" in refused.stderr
    (tmp_path / "token").write_text("vibe_" + "Q" * 43 + "\n")
    from_file = cli("mcp", "--token-file", str(tmp_path / "token"), "--database-url", db, ok=False)
    assert "invalid, expired or revoked token" in from_file.stderr and "warning" not in from_file.stderr


def piped_mcp(db: str, token: str, lines: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`vibe-ensemble mcp` on the database `db` with `lines` written to its stdin, then stdin closed."""
    return subprocess.run(
        [CLI, "mcp", "--database-url", db],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VIBE_TOKEN": token},
        cwd=cwd,
    )


def test_stdio_mcp_answers_what_it_read_before_stdin_closed(tmp_path: Path) -> None:
    """`printf … | vibe-ensemble mcp` on the database: every request written before stdin closes
    is answered, the writes done (the SDK's loop cancelled them at stdin's end, a write done and its
    answer never written)."""
    import json

    db, token = database_with_admin(tmp_path / "piped.db")

    def call_(id_: int, tool: str, **arguments: object) -> dict[str, object]:
        return {
            "jsonrpc": "2.0",
            "id": id_,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }

    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": PIPE_HELLO},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call_(2, "register_agent", name="piped"),
        call_(3, "create_issue", title="written from a pipe", agent="piped"),
        call_(4, "list_issues"),
    ]
    done = piped_mcp(db, token, [json.dumps(m) for m in messages], tmp_path)
    assert done.returncode == 0, done.stderr
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert sorted(answers) == [1, 2, 3, 4], done.stdout
    assert answers[3]["result"]["structuredContent"]["title"] == "written from a pipe"
    assert "items" in answers[4]["result"]["structuredContent"]  # (served beside the write: no order)
    import sqlite3

    with sqlite3.connect(tmp_path / "piped.db") as conn:  # the write answered is in the database
        titles = [row[0] for row in conn.execute("SELECT title FROM issues")]
    conn.close()
    assert titles == ["written from a pipe"]


def test_stdio_mcp_answers_a_line_that_is_no_json_rpc_message(tmp_path: Path) -> None:
    """On the database as through the bridge: a line the SDK's transport cannot read is answered (it
    was dropped without a word, and its client waited for ever)."""
    import json

    db, token = database_with_admin(tmp_path / "lines.db")
    lines = [  # (a byte-order mark before the first line, as some Windows tools write, is not part of it)
        "\ufeff" + json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": PIPE_HELLO}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        *UNREADABLE,
    ]
    done = piped_mcp(db, token, lines, tmp_path)
    assert done.returncode == 0, done.stderr
    check_unreadable_answered(done.stdout)


def test_stdio_mcp_says_the_2026_era_s_refusals_as_mcp_does(tmp_path: Path) -> None:
    """On a 2026-07-28 stdio connection the SDK refused a request without `params._meta` as
    `params._meta must be an object…` (no `[code]`, no data) and a version it does not speak listing
    only 2026-07-28: both are said as /mcp says them."""
    import json

    db, token = database_with_admin(tmp_path / "modern.db")
    pv, caps = "io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientCapabilities"
    meta = {pv: "2026-07-28", caps: {}}
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},  # opens 2026-07-28
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {**meta, pv: "2027-01-01"}}},
    ]
    done = piped_mcp(db, token, [json.dumps(line) for line in lines], tmp_path)
    assert done.returncode == 0, done.stderr
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert "result" in answers[1]
    no_meta = answers[2]["error"]
    assert no_meta["code"] == -32602 and no_meta["message"].startswith("[invalid_input] params._meta: ")
    assert no_meta["data"]["code"] == "invalid_input" and no_meta["data"]["field"] == "params._meta"
    unspoken = answers[3]["error"]
    assert unspoken["code"] == -32022
    assert unspoken["message"].startswith("[unsupported_protocol_version] protocol version '2027-01-01'")
    assert {"2025-11-25", "2026-07-28"} <= set(unspoken["data"]["supported"])


async def test_stdio_mcp_stops_when_its_token_is_revoked(tmp_path: Path) -> None:
    """The stdio server authenticated its token once, at start, and served on after it was revoked;
    it now reads the token again every keep-alive and, once it is not usable, refuses every call
    with `[unauthenticated]` and says so on stderr."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
    cli("migrate", "--database-url", db)
    token = cli("token", "create", "--role", "admin", "--label", "stdio", "--database-url", db).stdout.strip()
    env = {**os.environ, "VIBE_TOKEN": token, "VIBE_FEED_KEEPALIVE_S": "0.2"}
    params = StdioServerParameters(command=CLI, args=["mcp", "--database-url", db], env=env, cwd=tmp_path)
    errlog = (tmp_path / "stderr.log").open("w+")
    with errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await call(client, "register_agent", name="local")
            cli("token", "revoke", "1", "--database-url", db)  # the database's only token
            deadline = asyncio.get_running_loop().time() + 15
            while not (answer := await client.call_tool("list_agents", {})).is_error:
                assert asyncio.get_running_loop().time() < deadline, "still served after the revocation"
                await asyncio.sleep(0.05)
            error = str(answer.content[0].text)  # type: ignore[union-attr]
            assert "[unauthenticated] the token was revoked or has expired" in error, error
        assert "error: the token was revoked or has expired" in (tmp_path / "stderr.log").read_text()


def test_serve_on_port_0_says_the_port_the_system_chose(tmp_path: Path) -> None:
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "data"), "VIBE_HOST": "127.0.0.1"}
    env.pop("VIBE_PORT", None)
    log = tmp_path / "server.log"
    proc = start([CLI, "serve", "--migrate", "--port", "0"], env, log)
    try:
        said = re.compile(
            r"serving on http://127\.0\.0\.1:(\d+)  \(dashboard: /, MCP: http://127\.0\.0\.1:(\d+)/mcp\)"
        )
        started = lambda: log.exists() and said.search(log.read_text()) is not None  # noqa: E731
        wait_until(started, timeout=60, what="the start line")
        found = said.search(log.read_text())
        assert found is not None and found.group(1) == found.group(2) != "0"
        assert httpx2.get(f"http://127.0.0.1:{found.group(1)}/healthz").json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(30)


async def test_serve_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        "VIBE_PORT": str(port),
        "VIBE_HOST": "127.0.0.1",
    }
    env.pop("VIBE_DATABASE_URL", None)
    argv = [CLI, "serve", "--migrate", "--database-url", postgres_url]
    server = launch(argv, env, tmp_path / "server.log", f"http://127.0.0.1:{port}")
    try:
        match = TOKEN_RE.search(server.log())
        assert match, server.log()
        token = match.group(1)
        assert httpx2.get(server.url + "/readyz").json() == {"status": "ready", "database": "postgresql"}
        async with mcp_client(server.mcp_url, token) as client:
            await call(client, "register_agent", name="pg-worker")
            issue = await call(client, "create_issue", title="on postgres")
            claimed = await call(client, "claim_issue", agent="pg-worker")
            assert claimed["id"] == issue["id"]
        server.restart()
        assert "First start" not in server.log().split("Vibe Ensemble serving on")[-1]
        async with mcp_client(server.mcp_url, token) as client:
            page = await call(client, "list_issues", assignee="pg-worker")
            assert [(i["title"], i["status"]) for i in page["items"]] == [("on postgres", "in_progress")]
    finally:
        server.stop()
