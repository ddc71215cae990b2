"""`serve --workers N`: several processes share one port on PostgreSQL; SQLite refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.live_support import metric
from tests.support import (
    TOKEN_RE,
    ServerProcess,
    call,
    free_port,
    mcp_client,
    serve_refused,
    start_server,
    wait_until,
)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.postgres
async def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path, postgres_url: str) -> None:
    health_port = free_port()
    server = start_server(
        tmp_path,
        database_url=postgres_url,
        extra_args=["--workers", "2"],
        extra_env={"VIBE_HEALTH_PORT": str(health_port)},
    )
    try:
        workers = _children(server.proc.pid)
        assert len(workers) == 2, server.log()
        # Both workers answer on the one liveness port (ops/health.py).
        for _ in range(4):
            assert httpx2.get(f"http://127.0.0.1:{health_port}/healthz").json()["status"] == "ok"
        # Each new connection may land on either worker; every one of them answers with the same state.
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "register_agent", name="w1", role="worker")
            await call(client, "create_issue", title="made through one worker", agent="w1")
        for _ in range(6):
            async with mcp_client(server.mcp_url, server.admin_token) as client:
                issues = await call(client, "list_issues")
                assert [i["title"] for i in issues["items"]] == ["made through one worker"]
        assert server.log().count("First start") == 1
        assert server.log().count("serving on") == 1
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log()
    # each worker's lines say which it is (its duties' role at start, its stop)
    assert "worker=0" in server.log() and "worker=1" in server.log(), server.log()[-3000:]
    wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), what="workers to exit")


@pytest.fixture
def two_workers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[ServerProcess, list[int]]]:
    """`serve --workers 2` on PostgreSQL and its two workers' pids; whatever a test kills, none is
    left running after it."""
    server = start_server(tmp_path, database_url=postgres_url, extra_args=["--workers", "2"])
    workers = _children(server.proc.pid)
    try:
        assert len(workers) == 2, server.log()
        yield server, workers
    finally:
        server.stop()
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


@pytest.mark.postgres
def test_workers_stop_when_their_supervisor_is_killed_outright(
    two_workers: tuple[ServerProcess, list[int]],
) -> None:
    """SIGKILL forwards nothing: the workers served on, orphaned, holding the port."""
    server, workers = two_workers
    server.proc.kill()
    server.proc.wait(10)
    wait_until(lambda: not any(_running(w) for w in workers), what="the orphaned workers to exit")
    with pytest.raises(httpx2.TransportError):
        httpx2.get(server.url + "/healthz", timeout=2)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, if anyone does)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.postgres
def test_a_worker_killed_stops_the_replica_saying_which(two_workers: tuple[ServerProcess, list[int]]) -> None:
    server, workers = two_workers
    os.kill(workers[0], signal.SIGKILL)
    assert server.proc.wait(30) == 1  # a worker killed by a signal: the replica exits 1
    wait_until(lambda: not any(_running(w) for w in workers), what="the other worker to stop")
    assert "worker_died" in server.log() and f"pid={workers[0]}" in server.log(), server.log()[-2000:]
    assert "signal=9" in server.log()


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    done = serve_refused(tmp_path, "--migrate", "--workers", "2", COLUMNS="60")
    assert done.returncode == 2
    refusal = done.stderr.splitlines()[-1]  # one line, however narrow the terminal (or a container log)
    assert refusal.startswith("error: --workers needs PostgreSQL") and refusal.endswith(
        "postgresql+asyncpg://…"
    )
    assert not (tmp_path / "vibe.db").exists()  # refused before anything was created


def test_the_worker_count_may_come_from_the_environment(tmp_path: Path) -> None:
    done = serve_refused(tmp_path, "--migrate", VIBE_WORKERS="2")
    assert done.returncode == 2  # VIBE_WORKERS=2 is read: refused on SQLite, as the flag is
    assert "--workers needs PostgreSQL" in done.stderr


def test_a_worker_count_out_of_range_is_refused(tmp_path: Path) -> None:
    done = serve_refused(tmp_path, "--workers", "0")
    assert done.returncode == 2
    assert "--workers" in done.stderr


@pytest.mark.postgres
async def test_ctrl_c_in_a_terminal_stops_the_workers_gracefully(tmp_path: Path, postgres_url: str) -> None:
    """A terminal's Ctrl-C signals its whole foreground process group. The workers, each told once (by
    the supervisor), stop gracefully: a held wait is answered, no traceback, exit 0. (Told twice —
    by the terminal and by the supervisor — each took the second for "stop at once": in-flight work
    was cut off, and the log had the lifespan's CancelledError tracebacks.)"""
    port = free_port()
    env = {
        **os.environ,
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        "VIBE_PORT": str(port),
        "VIBE_HOST": "127.0.0.1",
        "VIBE_DATABASE_URL": postgres_url,
        "VIBE_SHUTDOWN_DRAIN_S": "0",
    }
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(  # a session of its own, as a terminal's shell gives a job
            [sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate", "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: _ready(url), timeout=90, what="the workers to serve")
        match = TOKEN_RE.search(log_path.read_text())
        assert match, log_path.read_text()
        headers = {"Authorization": f"Bearer {match.group(1)}"}
        async with httpx2.AsyncClient(base_url=url + "/api/v1", headers=headers, timeout=30) as api:
            assert (await api.post("/projects/default/agents", json={"name": "waiter"})).status_code == 201
            waiting = asyncio.create_task(
                api.get("/projects/default/agents/waiter/inbox/wait", params={"timeout_s": 30})
            )
            async with asyncio.timeout(20):  # until the wait is held
                while await asyncio.to_thread(metric, url, "vibe_mail_waiters") < 1:
                    await asyncio.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the supervisor and every worker of its group
            answer = await waiting
        assert answer.status_code == 200 and answer.json()["items"] == [], answer.text
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpx2.get(url + "/readyz", timeout=5).status_code == 200
    except httpx2.HTTPError:
        return False
