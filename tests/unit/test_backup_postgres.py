"""pg_dump / pg_restore as backups use them: where they are found, and how their failures read."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from vibe_ensemble.services.doctor import backup_tools
from vibe_ensemble.store import backup_postgres
from vibe_ensemble.store.backup_postgres import find_pg_tool
from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.backup_target import Target


def tool(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_tool_missing_from_pg_bin_dir_is_looked_for_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tool(tmp_path / "bin", "pg_dump", "exit 0")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_pg_tool("pg_dump", tmp_path / "nonexistent") == str(on_path)  # the documented order
    own = tool(tmp_path / "pg", "pg_dump", "exit 0")
    assert find_pg_tool("pg_dump", own.parent) == str(own)  # VIBE_PG_BIN_DIR first


def test_a_tool_found_nowhere_names_every_place_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(backup_postgres, "glob", lambda pattern: [])
    with pytest.raises(BackupError) as failure:
        find_pg_tool("pg_dump", tmp_path / "nonexistent")
    message = str(failure.value)
    assert f"VIBE_PG_BIN_DIR={tmp_path / 'nonexistent'}" in message and "on PATH" in message
    assert "nothing was changed" in message

    finding = backup_tools(tmp_path / "nonexistent")
    assert finding.status == "warn"
    assert "install the PostgreSQL client tools" in finding.fix  # what to do, not the error again
    assert finding.fix not in finding.detail


def test_doctor_says_when_pg_bin_dir_holds_no_pg_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tool(tmp_path / "bin", "pg_dump", "exit 0")
    monkeypatch.setenv("PATH", str(on_path.parent))
    finding = backup_tools(tmp_path / "nonexistent")
    assert finding.status == "warn" and str(on_path) in finding.detail
    assert "point VIBE_PG_BIN_DIR" in finding.fix
    assert backup_tools(None).status == "ok"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("kill -SEGV $$", "pg_restore was killed by signal 11 (SIGSEGV); it said nothing on stderr"),
        (
            "echo 'out of memory' >&2; kill -KILL $$",
            "pg_restore was killed by signal 9 (SIGKILL): out of memory",
        ),
        (
            "echo 'pg_restore: error: bad archive' >&2; exit 1",
            "pg_restore failed (exit 1): pg_restore: error: bad archive",
        ),
        ("exit 3", "pg_restore failed (exit 3); it said nothing on stderr"),
    ],
)
def test_how_a_tool_ended_is_said_plainly(tmp_path: Path, script: str, expected: str) -> None:
    bin_dir = tool(tmp_path / "pg", "pg_restore", script).parent
    target = Target("postgresql://vibe@127.0.0.1:5432/vibe")
    with pytest.raises(BackupError) as failure:
        asyncio.run(backup_postgres.restore(target, tmp_path / "x.pgdump", bin_dir, clean=False))
    assert str(failure.value) == expected


DEADLOCKED = (
    "echo 'pg_restore: error: could not execute query: ERROR:  deadlock detected' >&2; "
    "echo 'Command was: ALTER TABLE IF EXISTS ONLY public.reservations DROP CONSTRAINT x;' >&2; exit 1"
)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(("deadlocks", "runs"), [(2, 3), (9, backup_postgres.RESTORE_ATTEMPTS)])
def test_a_restore_that_deadlocked_with_a_server_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadlocks: int, runs: int
) -> None:
    """A forced restore while a server wrote failed in CI when PostgreSQL broke a deadlock between
    pg_restore and the server by aborting pg_restore (its one transaction: nothing had changed)."""
    monkeypatch.setattr(backup_postgres, "RESTORE_BACKOFF_S", 0.0)
    count = tmp_path / "runs"
    script = f"echo x >> {count}; if [ $(wc -l < {count}) -le {deadlocks} ]; then {DEADLOCKED}; fi"
    bin_dir = tool(tmp_path / "pg", "pg_restore", script).parent
    target = Target("postgresql://vibe@127.0.0.1:5432/vibe")
    restore = backup_postgres.restore(target, tmp_path / "x.pgdump", bin_dir, clean=True)
    if deadlocks < runs:
        asyncio.run(restore)
    else:
        with pytest.raises(BackupError, match="deadlock detected"):
            asyncio.run(restore)
    assert len(count.read_text().splitlines()) == runs


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_a_restore_that_failed_otherwise_is_not_run_again(tmp_path: Path) -> None:
    count = tmp_path / "runs"
    bin_dir = tool(tmp_path / "pg", "pg_restore", f"echo x >> {count}; echo 'bad archive' >&2; exit 1").parent
    target = Target("postgresql://vibe@127.0.0.1:5432/vibe")
    with pytest.raises(BackupError, match="bad archive"):
        asyncio.run(backup_postgres.restore(target, tmp_path / "x.pgdump", bin_dir, clean=True))
    assert len(count.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("raised", "reason"),
    [(TimeoutError(), "no answer in time"), (ConnectionRefusedError(), "ConnectionRefusedError")],
)
def test_a_connection_failure_that_says_nothing_still_gets_a_reason(
    monkeypatch: pytest.MonkeyPatch, raised: OSError, reason: str
) -> None:
    async def connect(*_args: object, **_kwargs: object) -> None:
        raise raised  # asyncpg's connect timeout is a bare TimeoutError: its str is empty

    monkeypatch.setattr(backup_postgres.asyncpg, "connect", connect)
    target = Target("postgresql://vibe@127.0.0.1:5432/vibe")
    with pytest.raises(BackupError) as caught:
        asyncio.run(backup_postgres.connect(target))
    assert str(caught.value) == f"cannot connect to {target.safe}: {reason}"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_a_restore_that_hangs_is_killed_at_its_time_limit_naming_the_setting(tmp_path: Path) -> None:
    """pg_restore ran with no time limit: a PostgreSQL that hung kept `backup restore` (and `verify`)
    waiting forever. Past VIBE_PG_TOOL_TIMEOUT_S it is killed, and the failure says so."""
    pid_file = tmp_path / "pid"
    bin_dir = tool(tmp_path / "pg", "pg_restore", f"echo $$ > {pid_file}; exec sleep 600").parent
    target = Target("postgresql://vibe@127.0.0.1:5432/vibe")
    restore = backup_postgres.restore(target, tmp_path / "x.pgdump", bin_dir, clean=True, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(BackupError) as failure:
        asyncio.run(restore)
    assert time.monotonic() - started < 30
    assert str(failure.value) == (
        f"pg_restore into {target.safe} did not finish within 0.5 s (VIBE_PG_TOOL_TIMEOUT_S), so it was "
        f"stopped; its transaction is rolled back. Is PostgreSQL at {target.safe} answering, and does no "
        "other session hold a lock on its tables? A database that takes longer needs a larger "
        "VIBE_PG_TOOL_TIMEOUT_S"
    )
    assert _gone(int(pid_file.read_text()))  # killed, and waited for: not left running


def test_the_time_limit_is_a_setting_with_a_default_below_the_backup_jobs_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vibe_ensemble.ops.config import Settings

    assert Settings().pg_tool_timeout_s == backup_postgres.DEFAULT_TIMEOUT_S == 1800
    monkeypatch.setenv("VIBE_PG_TOOL_TIMEOUT_S", "90")
    assert Settings().pg_tool_timeout_s == 90
