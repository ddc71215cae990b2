"""The first minutes on a new machine: `serve` on a taken port creates nothing and says how to pick
another; the database has one default home whatever the current directory, printed at start; commands
that only use a database never create an empty one; the banner's commands can be run as printed,
from a shell without the server's settings: they carry its data directory and its URL."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import TOKEN_RE, free_port, launch

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def bare_env(home: Path) -> dict[str, str]:
    """No VIBE_ settings: the defaults, with the per-user data directory under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    return {**env, "HOME": str(home), "XDG_DATA_HOME": str(home / "share"), "COLUMNS": "200"}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_taken_port_creates_nothing_and_names_the_way_out(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(["serve", "--migrate", "--port", str(port)], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: port {port} on 127.0.0.1 is already in use"), done.stderr
    assert "make run PORT=8090" in done.stderr and "--port 8090" in done.stderr
    assert "Traceback" not in done.stderr and "token" not in done.stdout
    assert not (tmp_path / "share").exists()  # no database, so no admin token spent


def test_one_default_database_wherever_commands_start(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    expected = tmp_path / "share" / "vibe-ensemble" / "vibe.db"

    # Commands that only use a database refuse to invent an empty one, and say what to do.
    for args in (["token", "list"], ["audit"], ["mcp", "--token", "vibe_x"]):
        done = run(args, env, elsewhere)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip().startswith(f"error: no database at {expected}"), done.stderr
        assert "serve --migrate" in done.stderr and "Traceback" not in done.stderr
    assert not expected.exists()

    # The server makes it in the per-user data directory, says where, and its banner's commands run
    # as printed, from the directory it started in.
    port = free_port()
    argv = [CLI, "serve", "--migrate", "--port", str(port)]
    server = launch(argv, env, tmp_path / "serve.log", f"http://127.0.0.1:{port}")
    try:
        log = server.log()
        assert f"database: {expected}" in log
        assert TOKEN_RE.search(log)
        assert "Bearer" not in log and '"headers"' not in log  # no admin token inside a config to paste
        assert "VIBE_DATA_DIR=" not in log  # the default data directory needs no saying
        printed = next(line.strip() for line in log.splitlines() if line.strip().endswith("token list"))
        listing = subprocess.run(
            shlex.split(printed), env=env, cwd=Path.cwd(), capture_output=True, text=True, timeout=120
        )
        # ...and from any other directory, the same database.
        from_elsewhere = run(["token", "list"], env, elsewhere)
    finally:
        server.stop()
    assert listing.returncode == 0, listing.stderr
    assert "admin" in listing.stdout
    assert from_elsewhere.returncode == 0 and "admin" in from_elsewhere.stdout, from_elsewhere.stderr
    assert expected.exists() and not (elsewhere / "data").exists()


def test_the_banner_carries_the_servers_data_directory_and_url(tmp_path: Path) -> None:
    """`make run PORT=… VIBE_DATA_DIR=…`: the banner's commands, pasted into a shell that has neither,
    act on the server's database (not the default one) and point the agent's client at the server."""
    env = bare_env(tmp_path)  # the shell the commands are pasted into: no VIBE_ settings
    data = tmp_path / "team-a"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [CLI, "serve", "--migrate", "--port", str(port)]
    server = launch(argv, {**env, "VIBE_DATA_DIR": str(data)}, tmp_path / "serve.log", url)
    repo = tmp_path / "repo"
    repo.mkdir()
    try:
        log = server.log()
        printed = [line.strip() for line in log.splitlines()]
        listing_line = next(line for line in printed if line.endswith("token list"))
        connect_line = next(line for line in printed if " connect claude-code --agent NAME" in line)
        assert listing_line.startswith(f"VIBE_DATA_DIR={data} ")
        assert connect_line.startswith(f"VIBE_DATA_DIR={data} ")
        assert connect_line.endswith(f" --url {url}/mcp")

        listing = subprocess.run(
            ["sh", "-c", listing_line], env=env, cwd=Path.cwd(), capture_output=True, text=True, timeout=120
        )
        # connect runs in the agent's repository, wherever that is
        connect_alice = connect_line.replace("NAME", "alice")
        connected = subprocess.run(
            ["sh", "-c", connect_alice], env=env, cwd=repo, capture_output=True, text=True, timeout=120
        )
        check_line = next(
            line.removeprefix("Check: ")
            for line in connected.stdout.splitlines()
            if line.startswith("Check: ")
        )
        checked = subprocess.run(
            ["sh", "-c", check_line], env=env, cwd=Path.cwd(), capture_output=True, text=True, timeout=120
        )
    finally:
        server.stop()
    assert listing.returncode == 0, listing.stderr
    assert "admin" in listing.stdout
    assert connected.returncode == 0, connected.stderr
    assert connected.stderr == ""  # the server answered at the URL: no warning
    config = json.loads((repo / ".mcp.json").read_text())
    assert config["mcpServers"]["vibe-ensemble"]["url"] == f"{url}/mcp"
    assert check_line.startswith(f"VIBE_DATA_DIR={data} ")
    assert checked.returncode == 0, checked.stderr
    assert "alice" in checked.stdout  # the agent's token is in the server's database
    assert not (tmp_path / "share").exists()  # nothing went to the default data directory


def test_the_banners_commands_run_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started from its checkout, with `vibe-ensemble` not on PATH (`make run`): every command
    the banner prints names the program by its absolute path, so it runs from the agent's directory."""
    checkout = Path(CLI).parents[2]  # .venv/bin/vibe-ensemble: the program is under this directory
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p != str(Path(CLI).parent)
    )
    env = {**bare_env(tmp_path), "PATH": path}
    monkeypatch.chdir(checkout)  # where the server starts
    port = free_port()
    argv = [CLI, "serve", "--migrate", "--port", str(port)]
    server = launch(
        argv,
        {**env, "VIBE_DATA_DIR": str(tmp_path / "data")},
        tmp_path / "serve.log",
        f"http://127.0.0.1:{port}",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        printed = [line.strip() for line in server.log().splitlines()]
        create = next(line for line in printed if " token create " in line).replace("NAME", "alice")
        listing = next(line for line in printed if line.endswith(" token list"))
        connect = next(line for line in printed if " connect claude-code " in line).replace("NAME", "bob")
        done = {
            line: subprocess.run(
                ["sh", "-c", line], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=120
            )
            for line in (create, listing, connect)
        }
    finally:
        server.stop()
    for line, run_here in done.items():
        assert run_here.returncode == 0, (line, run_here.stderr)
    assert "alice" in done[listing].stdout
    assert (elsewhere / ".mcp.json").exists()
