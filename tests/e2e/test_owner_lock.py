"""One process owns a SQLite file, and whoever meets it is told which and how to get through: the
owner's pid and the MCP URL it really serves at (its lock file records them), a stdio `mcp` owner
as one that has no URL, and an owner that recorded no address (an older release's lock holds its pid
alone) as such — never a port guessed from the settings of the process that was refused."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ServerProcess, run_cli, serve_refused, start_server, wait_until

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'vibe.db'}"


def stdio_mcp(db: str, token: str) -> subprocess.CompletedProcess[str]:
    """`mcp` without --url on `db` (the environment's VIBE_PORT, VIBE_HOST and VIBE_PUBLIC_URL
    unset: what it would guess from its own settings is the default, port 8080)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIBE_PORT", "VIBE_HOST", "VIBE_PUBLIC_URL")}
    return run_cli([CLI, "mcp", "--database-url", db], env={**env, "VIBE_TOKEN": token, "COLUMNS": "200"})


def migrated_with_token(path: Path) -> tuple[str, str]:
    """A migrated SQLite database at `path` (its URL) and an admin token made on it."""
    db = f"sqlite+aiosqlite:///{path}"
    for argv in (["migrate"], ["token", "create", "--role", "admin"]):
        done = run_cli([CLI, *argv, "--database-url", db])
        assert done.returncode == 0, done.stderr
    return db, done.stdout.strip()


def test_mcp_on_a_file_a_server_on_every_address_owns_names_its_pid_and_loopback_url(
    tmp_path: Path,
) -> None:
    """The server listens on 0.0.0.0 at a port of its own: the refusal names that port on 127.0.0.1,
    and the command it gives works as printed."""
    server = start_server(tmp_path, extra_env={"VIBE_HOST": "0.0.0.0"})
    try:
        done = stdio_mcp(sqlite_url(server.data_dir), server.admin_token)
        [line] = done.stderr.splitlines()
        assert done.returncode == 1, done.stderr
        assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in line
        found = re.search(r"`(\S+) mcp --url (\S+)`", line)
        assert found is not None, line
        assert found.group(2) == server.mcp_url  # http://127.0.0.1:PORT/mcp, not 0.0.0.0, not :8080
        assert "0.0.0.0" not in line and ":8080" not in line
        through = run_cli(
            [CLI, "mcp", "--url", found.group(2)], env={**os.environ, "VIBE_TOKEN": server.admin_token}
        )
        assert through.returncode == 0, through.stderr  # the way it names reaches the server
    finally:
        server.stop()


def test_a_second_server_on_the_file_names_the_first_ones_pid_and_url(server: ServerProcess) -> None:
    """The refused server has a port of its own (VIBE_PORT): the message names the owner's."""
    done = serve_refused(server.data_dir)
    assert done.returncode == 1, done.stderr
    line = " ".join(done.stderr.split())  # one line, however the terminal would wrap it
    assert "is already in use by another Vibe Ensemble server" in line
    assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in line


def test_a_second_stdio_mcp_is_told_the_first_has_no_url_and_how_to_share_the_file(tmp_path: Path) -> None:
    db, token = migrated_with_token(tmp_path / "vibe.db")
    env = {**os.environ, "VIBE_TOKEN": token}
    first = subprocess.Popen(
        [CLI, "mcp", "--database-url", db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        lock = tmp_path / "vibe.db.lock"
        wait_until(
            lambda: lock.exists() and lock.read_text().split()[:1] == [str(first.pid)],
            what="the first stdio server to own the file",
        )
        done = stdio_mcp(db, token)
        [line] = done.stderr.splitlines()
        assert done.returncode == 1, done.stderr
        assert f"(pid {first.pid}: `vibe-ensemble mcp` on stdio, which has no URL)" in line
        assert " serve`" in line and "mcp --url" in line  # serve the file, and go through the server
        assert "http://" not in line  # no URL is made up
    finally:
        _, err = first.communicate(timeout=60)  # its stdin closed: it stops
    assert first.returncode == 0, err


def test_an_owner_that_recorded_no_address_is_named_by_its_pid_alone(tmp_path: Path) -> None:
    """An older release's server wrote its pid alone: its address is said to be unknown, not guessed."""
    db, token = migrated_with_token(tmp_path / "vibe.db")
    fd = os.open(tmp_path / "vibe.db.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as an older server holds it
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        done = stdio_mcp(db, token)
        refused_serve = serve_refused(tmp_path / "unused", "--database-url", db)
    finally:
        os.close(fd)
    [line] = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert f"(pid {os.getpid()}; its address is not recorded)" in line
    assert "the MCP URL it printed at start" in line
    assert "http://" not in line  # no guessed URL (it was http://127.0.0.1:8080/mcp)
    assert refused_serve.returncode == 1, refused_serve.stderr
    assert f"(pid {os.getpid()}; its address is not recorded)" in " ".join(refused_serve.stderr.split())


def test_migrate_refuses_a_file_a_server_owns_and_names_it(tmp_path: Path) -> None:
    """`migrate` never changes the schema under a running server: it is refused, naming the owner,
    and the database is left as it was; once the server has stopped it runs."""
    server = start_server(tmp_path)
    db = sqlite_url(server.data_dir)
    try:
        done = run_cli([CLI, "migrate", "--database-url", db], env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 1, done.stderr
        assert f"(pid {server.proc.pid}: `vibe-ensemble serve`, MCP at {server.mcp_url})" in done.stderr
        assert "migrated" not in done.stderr
    finally:
        server.stop()
    done = run_cli([CLI, "migrate", "--database-url", db])
    assert done.returncode == 0, done.stderr
    assert "migrated" in done.stderr
