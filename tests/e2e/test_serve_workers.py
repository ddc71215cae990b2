"""`serve --workers N`: several processes share one port on PostgreSQL; SQLite refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import call, free_port, mcp_client, start_server, wait_until


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.postgres
async def test_two_workers_serve_one_port_and_stop_together(tmp_path: Path, postgres_url: str) -> None:
    server = start_server(tmp_path, database_url=postgres_url, extra_args=["--workers", "2"])
    try:
        workers = _children(server.proc.pid)
        assert len(workers) == 2, server.log()
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
    wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), what="workers to exit")


def _serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`serve ARGS` on SQLite in `tmp_path`, expected to refuse (it would serve otherwise: the timeout)."""
    environment = {**os.environ, "VIBE_DATA_DIR": str(tmp_path), "VIBE_PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", "vibe_ensemble.cli", "serve", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--migrate", "--workers", "2")
    assert done.returncode == 2
    assert "--workers needs PostgreSQL" in done.stderr
    assert not (tmp_path / "vibe.db").exists()  # refused before anything was created


def test_the_worker_count_may_come_from_the_environment(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--migrate", VIBE_WORKERS="2")
    assert done.returncode == 2  # VIBE_WORKERS=2 is read: refused on SQLite, as the flag is
    assert "--workers needs PostgreSQL" in done.stderr


def test_a_worker_count_out_of_range_is_refused(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--workers", "0")
    assert done.returncode == 2
    assert "--workers" in done.stderr
