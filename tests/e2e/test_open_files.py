"""A server started with a low soft limit of open files (1,024 on many Linux desktops) raises it to
the hard limit, so it holds more connections than that soft limit allowed."""

from __future__ import annotations

import os
import resource
import socket
import sys
from pathlib import Path

import httpx2
import pytest

from tests.support import free_port, launch

LOW = 256  # the soft limit the server starts with: below the connections the test holds open
HELD = 400

START_LOW = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW}, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "os.execv(sys.executable, [sys.executable, '-m', 'vibe_ensemble.cli', 'serve', '--migrate'])"
)


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files line in /proc/PID/limits")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the limits from /proc (Linux)")
def test_a_server_started_with_a_low_open_files_limit_raises_it_and_holds_more_connections(
    tmp_path: Path,
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < HELD + 100:
        pytest.skip(f"the hard limit of open files here ({hard}) leaves nothing to raise to")
    port = free_port()
    env = {
        **os.environ,
        "VIBE_DATA_DIR": str(tmp_path / "data"),
        "VIBE_PORT": str(port),
        "VIBE_HOST": "127.0.0.1",
    }
    argv = [sys.executable, "-c", START_LOW]
    server = launch(argv, env, tmp_path / "server.log", f"http://127.0.0.1:{port}")
    held: list[socket.socket] = []
    try:
        assert _soft_limit(server.proc.pid) > HELD  # execv kept the pid: this is the server
        assert f"open_files_limit_raised before={LOW} after={_soft_limit(server.proc.pid)}" in server.log()
        for _ in range(HELD):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        # every one of them accepted, and the server still answers a new one
        answer = httpx2.get(server.url + "/healthz", timeout=10)
        assert answer.status_code == 200
        assert "Too many open files" not in server.log()
    finally:
        for s in held:
            s.close()
        server.stop()
