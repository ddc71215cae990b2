"""A server the zygote forks (tests/zygote.py) is what a fresh `python -m vibe_ensemble.cli serve`
would be: the same answers, exit codes and log, in the environment and directory it was given."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import support
from tests.support import (
    CONSOLE_SCRIPT,
    Forked,
    forkable,
    free_port,
    launch,
    run_cli,
    start,
    start_server,
    wait_until,
)

SERVE = [sys.executable, "-m", "vibe_ensemble.cli", "serve"]


def test_a_refused_start_exits_and_says_so_as_a_fresh_interpreter_does(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "data"), "VIBE_PORT": str(port)}
        forked = start([*SERVE, "--migrate"], env, tmp_path / "forked.log")
        assert isinstance(forked, Forked)
        fresh = subprocess.run([*SERVE, "--migrate"], env=env, capture_output=True, text=True, timeout=60)
        assert forked.wait(timeout=60) == fresh.returncode == 2
    said = (tmp_path / "forked.log").read_text()
    assert f"port {port}" in said and said.strip() == (fresh.stdout + fresh.stderr).strip()
    assert not (tmp_path / "data").exists()  # nothing was created, as the refusal promises


def test_a_forked_server_runs_where_and_as_it_was_told_and_reports_its_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    (tmp_path / "here").mkdir()
    env = {**os.environ, "VIBE_DATA_DIR": "relative-data", "VIBE_PORT": str(port), "VIBE_HOST": "127.0.0.1"}
    monkeypatch.chdir(tmp_path / "here")
    server = launch([*SERVE, "--migrate"], env, tmp_path / "server.log", f"http://127.0.0.1:{port}")
    try:
        assert isinstance(server.proc, Forked)
        assert (tmp_path / "here" / "relative-data").is_dir()  # its own working directory
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        server.stop()


@pytest.mark.parametrize("args", [["--help"], ["token", "list"], ["migrate"], ["nonsense"]])
def test_a_forked_command_answers_exactly_as_a_fresh_interpreter(tmp_path: Path, args: list[str]) -> None:
    # what the CLI and typer size their output by, read when their modules are imported
    env = {**os.environ, "VIBE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "120", "TERMINAL_WIDTH": "100"}
    for argv in ([sys.executable, "-m", "vibe_ensemble.cli", *args], [CONSOLE_SCRIPT, *args]):
        assert forkable(argv, env) is not None
        forked = run_cli(argv, env=env, cwd=tmp_path)
        fresh = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        )


def ended(pid: int) -> bool:
    """Whether process `pid` is gone or a zombie (an orphan waits there for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_forked_server_whose_zygote_died_is_ended_and_reported_killed(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    assert isinstance(server.proc, Forked) and support._zygote is not None
    support._zygote.proc.kill()
    support._zygote.proc.wait()
    assert server.proc.wait(timeout=30) == -signal.SIGKILL  # no record can come: not waited on for ever
    wait_until(lambda: ended(server.proc.pid), timeout=10, what="the orphan to end")  # it does not outlive it
    again = start_server(tmp_path, port=int(server.url.rsplit(":", 1)[1]))  # the same data and port
    try:
        assert isinstance(again.proc, Forked)  # a new zygote
    finally:
        again.stop()
