"""What clients get when the database goes away or its disk fills up: clear answers, never a 500.

- PostgreSQL outage: a private PostgreSQL cluster (initdb/pg_ctl in a temporary directory, run as the
  `postgres` user when the tests run as root) that the test stops and starts again.
- Disk full: the SQLite database on a 6 MiB tmpfs the test mounts and fills (needs root; skipped
  otherwise, saying why).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..support import ServerProcess, call, free_port, mcp_client, start_server, wait_until


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class Cluster:
    """A throw-away PostgreSQL server on a free loopback port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vibe-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            [*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.start()
    try:
        yield c
    finally:
        c.destroy()


def _tracebacks(server: ServerProcess) -> int:
    return server.log().count("Traceback (most recent call last)")


async def _ws_close(url: str, token: str) -> int:
    """A WebSocket feed opened now: the code it is closed with (within 10 s)."""
    ws_url = url.replace("http://", "ws://") + "/api/v1/events/ws?after=0"
    auth = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url, additional_headers=auth, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None, closed.value
    assert closed.value.rcvd.reason.startswith("database_unavailable"), closed.value.rcvd
    return closed.value.rcvd.code


async def _sse_end(url: str, token: str, delivered: asyncio.Event) -> dict[str, object]:
    """Follow the event stream until it ends; its error frame's data. `delivered` is set once
    the stream has delivered its first event."""
    headers = {"Authorization": f"Bearer {token}"}
    lines: list[str] = []
    async with (
        httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as http,
        http.stream("GET", "/api/v1/events/stream?after=0") as r,
    ):
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith("id: "):
                delivered.set()
    error = lines.index("event: error")
    return json.loads(lines[error + 1].removeprefix("data: "))  # type: ignore[no-any-return]


async def test_a_postgresql_outage_gets_clear_answers_and_recovers(cluster: Cluster, tmp_path: Path) -> None:
    env = {"VIBE_LOG_JSON": "false", "VIBE_FEED_KEEPALIVE_S": "1"}  # an idle feed reads the log every second
    server = start_server(tmp_path, database_url=cluster.url, extra_env=env)
    try:
        token = server.admin_token
        api = httpx2.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        async with api, mcp_client(server.mcp_url, token) as mcp:
            r = await api.post("/api/v1/projects/default/issues", json={"title": "before the outage"})
            assert r.status_code == 201, r.text
            assert (await call(mcp, "list_issues", project="default"))["items"]
            before = _tracebacks(server)
            delivered = asyncio.Event()
            stream_end = asyncio.create_task(_sse_end(server.url, token, delivered))
            await asyncio.wait_for(delivered.wait(), 30)  # the stream is open (its first read is done)

            cluster.stop()

            # REST, on the same keep-alive connection, again and again: 503 with Retry-After, no reset.
            for _ in range(5):
                r = await api.get("/api/v1/projects/default/issues")
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "database_unavailable"
                assert int(r.headers["retry-after"]) >= 1
            r = await api.post("/api/v1/projects/default/issues", json={"title": "during the outage"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"

            # MCP: the credential was verified a moment ago, so the agent gets a tool error it can act on.
            result = await mcp.call_tool("list_issues", {"project": "default"})
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "[database_unavailable]" in text and "retry in 5 s" in text, text

            # A token never seen cannot be checked: a plain 503 with Retry-After, not a protocol error.
            stranger = await api.post(
                "/mcp",
                headers={"Authorization": "Bearer vibe_" + "x" * 43, "Accept": "application/json"},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            )
            assert stranger.status_code == 503 and "retry-after" in stranger.headers
            # No token at all needs no database to refuse: 401, not 503 (the failure's audit
            # entry cannot be written, and the refusal does not wait on it).
            for headers in ({}, {"Authorization": "Bearer hunter2"}):
                async with httpx2.AsyncClient(base_url=server.url, timeout=30) as anonymous:
                    refused = await anonymous.get("/api/v1/projects/default/issues", headers=headers)
                assert refused.status_code == 401, (headers, refused.text)
                assert refused.json()["error"]["code"] == "unauthenticated"

            # Feeds, open and new, end saying the database is unavailable and where to resume: a
            # WebSocket with 1013 (try again later; it was 4400, bad input, which a client must not
            # retry, or 1011), an event stream with a `database_unavailable` frame (was `internal`),
            # and neither logs a traceback per subscriber.
            for _ in range(2):
                assert await _ws_close(server.url, token) == 1013
            frame = await stream_end
            assert frame["code"] == "database_unavailable" and frame["last_id"] >= 1, frame

            # One traceback for the whole outage; then summaries.
            assert _tracebacks(server) - before == 1, server.log()[-4000:]
            assert "database_unreachable" in server.log()

            cluster.start()

            async def back() -> bool:
                return (await api.get("/api/v1/projects/default/issues")).status_code == 200

            deadline = 30
            for _ in range(deadline * 10):
                if await back():
                    break
                await _sleep(0.1)
            else:
                raise AssertionError("REST did not recover after PostgreSQL came back")
            titles = [i["title"] for i in (await api.get("/api/v1/projects/default/issues")).json()["items"]]
            assert titles == ["before the outage"]  # acknowledged kept, refused never half-written
            assert (await call(mcp, "list_issues", project="default"))["items"]
            wait_until(lambda: "database_recovered" in server.log(), what="the recovery line")
    finally:
        server.stop()


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_after_a_postgresql_restart_mail_reaches_another_replica_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Mail sent on one replica wakes a waiter on another as soon as the replicas serve again after
    a PostgreSQL restart. The waiting replica's LISTEN connection had backed off to its longest
    retry (5 s) during the outage; PostgreSQL is restarted just as it starts one, so without the
    pool's nudge that replica stays deaf to every commit for 4 s or more while already answering
    200 on /readyz (found by a replicas probe: mail took 1.4 to 2.9 s instead of milliseconds)."""
    env = {"VIBE_LOG_JSON": "false"}
    a = start_server(tmp_path, database_url=cluster.url, extra_env=env)
    b = start_server(tmp_path, database_url=cluster.url, extra_env=env)
    try:
        admin = {"Authorization": f"Bearer {a.admin_token}"}
        project = "/api/v1/projects/default"
        async with (
            httpx2.AsyncClient(base_url=a.url + project, headers=admin, timeout=30) as on_a,
            httpx2.AsyncClient(base_url=b.url + project, headers=admin, timeout=30) as on_b,
        ):
            for name in ("sender", "waiter"):
                assert (await on_a.post("/agents", json={"name": name})).status_code == 201

            cluster.stop()
            # B's LISTEN connection has backed off to its longest wait, and has just begun one.
            wait_until(lambda: _longest_waits(b) > 0, 30, "B's bridge backing off to 5 s")
            seen = _longest_waits(b)
            wait_until(lambda: _longest_waits(b) > seen, 30, "B's bridge beginning a 5 s wait")
            cluster.start()
            for server in (a, b):
                wait_until(
                    lambda s=server: httpx2.get(s.url + "/readyz", timeout=5).status_code == 200,
                    20,
                    "readyz after the restart",
                )

            waiting = asyncio.create_task(on_b.get("/agents/waiter/inbox/wait", params={"timeout_s": 20}))
            async with asyncio.timeout(10):
                while _mail_waiters(b) != 1:
                    await asyncio.sleep(0.05)
            message = {"agent": "sender", "to": ["waiter"], "subject": "after the restart", "body": "b"}
            sent = await on_a.post("/messages", json=message)
            assert sent.status_code == 201, sent.text
            sent_at = asyncio.get_running_loop().time()
            inbox = await waiting
            delay = asyncio.get_running_loop().time() - sent_at
            assert inbox.status_code == 200, inbox.text
            assert [i["message"]["id"] for i in inbox.json()["items"]] == [sent.json()["id"]]
            assert delay < 1.5, f"mail took {delay:.2f}s to reach the waiter on the other replica"
    finally:
        a.stop()
        b.stop()


def _longest_waits(server: ServerProcess) -> int:
    """How often the server's event bridge has begun its longest wait before reconnecting."""
    lines = server.log().splitlines()
    return sum("event=event_bridge_lost" in line and "retry_in_s=5.0" in line for line in lines)


def _mail_waiters(server: ServerProcess) -> float:
    for line in httpx2.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("vibe_mail_waiters "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_refuses_writes_clearly_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{small_disk / 'vibe.db'}"
    server = start_server(tmp_path, database_url=url)
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with httpx2.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
            r = await api.post("/api/v1/projects/default/issues", json={"title": "before"})
            assert r.status_code == 201
            filler = _fill(small_disk)
            refused = None
            for i in range(50):  # the WAL may hold a few more pages: write until the disk says no
                r = await api.post(
                    "/api/v1/projects/default/issues", json={"title": f"t{i}", "body": "x" * 60_000}
                )
                if r.status_code != 201:
                    refused = r
                    break
            assert refused is not None, "the disk never filled up"
            assert refused.status_code == 507, refused.text
            assert refused.json()["error"]["code"] == "storage_full"
            assert "disk is full" in refused.json()["error"]["message"]
            r = await api.get("/api/v1/projects/default/issues?limit=5")
            assert r.status_code == 200  # reads keep working, on the same connection

            filler.unlink()
            r = await api.post("/api/v1/projects/default/issues", json={"title": "after"})
            assert r.status_code == 201, r.text
    finally:
        server.stop()


def _without_root_override(argv: list[str]) -> list[str]:
    """`argv` run without the power to ignore file permissions (root has it; chmod means nothing to root)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("a read-only file means nothing to root, and setpriv is not here to drop that power")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


async def test_a_read_only_sqlite_file_refuses_writes_clearly_and_recovers(tmp_path: Path) -> None:
    """A server started on a database file it cannot write: writes get database_unavailable (were a
    500 `internal` with a traceback per request), /readyz says writes are refused (it said ready),
    reads go on, and once the file is writable again writes resume without a restart."""
    server = start_server(tmp_path, extra_env={"VIBE_SWEEP_INTERVAL_S": "0.2"})  # duties run meanwhile
    try:
        server.stop()
        files = sorted(server.data_dir.glob("vibe.db*"))
        database = [f for f in files if not f.name.endswith(".lock")]
        for f in database:
            f.chmod(0o444)
        server.argv = _without_root_override(server.argv)
        server.restart()
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with (
            httpx2.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api,
            mcp_client(server.mcp_url, server.admin_token) as mcp,
        ):
            r = await api.post("/api/v1/projects/default/issues", json={"title": "refused"})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_unavailable" and "retry-after" in r.headers
            result = await mcp.call_tool("create_issue", {"title": "refused", "project": "default"})
            assert result.is_error and "[database_unavailable]" in result.content[0].text  # type: ignore[union-attr]
            ready = await api.get("/readyz")
            assert ready.status_code == 503 and ready.json()["database"] == "writes refused", ready.text
            assert (await api.get("/api/v1/projects/default/issues")).status_code == 200
            assert _tracebacks(server) <= 1, server.log()[-3000:]  # the fault's first line only

            for f in server.data_dir.glob("vibe.db*"):  # as an operator would: SQLite made -shm meanwhile
                f.chmod(0o600)

            async def written() -> bool:
                r = await api.post("/api/v1/projects/default/issues", json={"title": "after"})
                return r.status_code == 201

            deadline = asyncio.get_running_loop().time() + 20
            while not await written():
                assert asyncio.get_running_loop().time() < deadline, "writes never resumed"
                await asyncio.sleep(0.2)
            assert (await api.get("/readyz")).status_code == 200
            titles = [i["title"] for i in (await api.get("/api/v1/projects/default/issues")).json()["items"]]
            assert "refused" not in titles
    finally:
        server.stop()
