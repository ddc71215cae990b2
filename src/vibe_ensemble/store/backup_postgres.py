"""PostgreSQL backups: `pg_dump --format=custom` (compressed), run on a snapshot exported from a
repeatable-read transaction in which the row counts are taken too, so manifest and dump describe
the same instant; `pg_restore` to restore, scratch databases to verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from glob import glob
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from vibe_ensemble.domain.rules import PG_TOOL_TIMEOUT_S
from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.backup_target import Target, quote
from vibe_ensemble.store.faults import innermost

log = structlog.get_logger(__name__)

# A restore with --force while servers write: pg_restore takes its tables' locks one statement at a
# time, in the dump's order, and a server's transaction takes them in its own, so the two can
# deadlock. PostgreSQL then aborts one of them; when that is pg_restore, its one transaction is
# rolled back (nothing changed) and it is run again.
RESTORE_ATTEMPTS = 5
RESTORE_BACKOFF_S = 0.1  # the wait before the next run, times the runs so far
DEADLOCK = b"deadlock detected"

# How long one run of pg_dump or pg_restore may take (VIBE_PG_TOOL_TIMEOUT_S): a PostgreSQL that
# hangs, or a session holding a lock on a table, made `backup create` (and the CronJobs) wait forever.
DEFAULT_TIMEOUT_S = PG_TOOL_TIMEOUT_S
TIMEOUT_SETTING = "VIBE_PG_TOOL_TIMEOUT_S"

PG_TOOL_HELP = (
    "install the PostgreSQL client tools of the server's major version (Debian: apt-get install "
    "postgresql-client) or set VIBE_PG_BIN_DIR to the directory that holds them"
)


def find_pg_tool(name: str, bin_dir: Path | None) -> str:
    """pg_dump / pg_restore: in `bin_dir` (VIBE_PG_BIN_DIR), else on PATH, else the newest
    /usr/lib/postgresql/*/bin (docs/backups.md)."""
    if bin_dir is not None:
        candidate = bin_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if versions:
        return versions[-1]
    where = f"in VIBE_PG_BIN_DIR={bin_dir}, " if bin_dir is not None else ""
    raise BackupError(
        f"{name} was not found (looked {where}on PATH and in /usr/lib/postgresql/*/bin): {PG_TOOL_HELP}; "
        "nothing was changed"
    )


def _major_version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


async def _run(argv: list[str], env: dict[str, str]) -> None:
    returncode, stderr = await _call(argv, env)
    if returncode:
        raise BackupError(failure(Path(argv[0]).name, returncode, stderr))


async def _call(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the tool to its end; stopped on the way (its time is up, the command is interrupted), it
    is killed and waited for: none is left running, nor writing a file that is then removed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    try:
        _, stderr = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, stderr


def timed_out(doing: str, target: Target, limit_s: float, then: str = "") -> str:
    """The failure of a step that did not finish within VIBE_PG_TOOL_TIMEOUT_S, naming the limit."""
    then = f"; {then}" if then else ""
    return (
        f"{doing} did not finish within {limit_s:g} s ({TIMEOUT_SETTING}), so it was stopped{then}. Is "
        f"PostgreSQL at {target.safe} answering, and does no other session hold a lock on its tables? A "
        f"database that takes longer needs a larger {TIMEOUT_SETTING}"
    )


@contextlib.asynccontextmanager
async def _within(
    limit_s: float, message: str, conn: asyncpg.Connection | None = None
) -> AsyncIterator[None]:
    """The block, given `limit_s` seconds; then it is cancelled (a tool it runs is killed, `conn`
    dropped without waiting on the server) and a BackupError says `message`."""
    try:
        async with asyncio.timeout(limit_s) as scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        if conn is not None:
            conn.terminate()  # a graceful close would wait on the server that did not answer
        raise BackupError(message) from None


PR_SET_PDEATHSIG = 1  # prctl(2): the signal the kernel sends a process when its parent ends


def _die_with_parent() -> None:
    """In the child (pg_dump, pg_restore) before it starts: the kernel kills it when this process
    ends. A `pg_restore` whose command was killed went on and committed the restore, without the
    steps that follow it (what the restored database keeps from the one it replaces); killed with
    it, its one transaction is rolled back and the database is left as it was."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def failure(tool: str, returncode: int, stderr: bytes) -> str:
    """How a tool ended, in one line: its exit status or the signal that killed it, and the last lines
    of what it said on stderr (if anything)."""
    if returncode < 0:
        try:
            how = f"was killed by signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"failed (exit {returncode})"
    said = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return f"{tool} {how}" + (f": {' / '.join(said[-3:])}" if said else "; it said nothing on stderr")


async def _pg_facts(conn: asyncpg.Connection) -> tuple[str | None, dict[str, int]]:
    tables = [
        r["table_name"]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    ]
    counts = {
        t: int(await conn.fetchval(f"SELECT count(*) FROM {quote(t)}"))  # noqa: S608  # nosec B608
        for t in tables
    }
    revision = (
        await conn.fetchval("SELECT version_num FROM alembic_version")
        if "alembic_version" in tables
        else None
    )
    return revision, counts


async def connect(target: Target) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(target.dsn(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot connect to {target.safe}: {innermost(exc)}") from exc


async def dump(
    target: Target, dest: Path, bin_dir: Path | None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[str | None, dict[str, int]]:
    """pg_dump of `target` into `dest`, and the row counts on its snapshot; all of it within
    `timeout_s` (the counts wait on a table's lock as pg_dump would)."""
    pg_dump = find_pg_tool("pg_dump", bin_dir)
    url, env = target.libpq()
    conn = await connect(target)
    late = timed_out(f"pg_dump of {target.safe}", target, timeout_s, "nothing was stored")
    try:
        async with _within(timeout_s, late, conn):
            # Not conn.transaction(): its ROLLBACK on the way out would wait on a server that hangs.
            # The transaction ends with the connection.
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = await _pg_facts(conn)
            await _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--compress=6",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={dest}",
                    f"--dbname={url}",
                ],
                env,
            )
        return facts
    finally:
        await conn.close()


async def restore(
    target: Target,
    dump: Path,
    bin_dir: Path | None,
    *,
    clean: bool,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """pg_restore of `dump` into `target`, in one transaction; each run within `timeout_s`."""
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    url, env = target.libpq()
    argv = [pg_restore, "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges"]
    if clean:
        argv += ["--clean", "--if-exists"]
    argv += [f"--dbname={url}", str(dump)]
    late = timed_out(f"pg_restore into {target.safe}", target, timeout_s, "its transaction is rolled back")
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        async with _within(timeout_s, late):
            returncode, stderr = await _call(argv, env)
        if not returncode:
            return
        if returncode < 0 or DEADLOCK not in stderr or attempt == RESTORE_ATTEMPTS:
            raise BackupError(failure(Path(pg_restore).name, returncode, stderr))
        log.warning("pg_restore_deadlocked", attempt=attempt, of=RESTORE_ATTEMPTS, database=target.safe)
        await asyncio.sleep(RESTORE_BACKOFF_S * attempt)


async def read_facts(
    target: Target, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[str | None, dict[str, int]]:
    """The schema revision and every table's row count, within `timeout_s` (a count waits on a
    table's lock)."""
    conn = await connect(target)
    late = timed_out(f"counting the rows of {target.safe}", target, timeout_s)
    try:
        async with _within(timeout_s, late, conn):
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # see `dump`
            return await _pg_facts(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(server: Target) -> Any:
    """A new empty database on `server`'s PostgreSQL, dropped afterwards."""
    name = f"vibe_verify_{secrets.token_hex(4)}"
    conn = await connect(server)
    try:
        try:
            await conn.execute(f"CREATE DATABASE {quote(name)}")
        except asyncpg.PostgresError as exc:
            raise BackupError(
                f"cannot create the scratch database {name} on {server.safe}: {innermost(exc)} "
                "(verify needs the CREATEDB privilege, or pass --scratch-url to another server)"
            ) from exc
        try:
            yield server.with_database(name)
        finally:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def other_sessions(target: Target) -> list[str]:
    conn = await connect(target)
    try:
        rows = await conn.fetch(
            "SELECT coalesce(nullif(application_name, ''), 'client') AS app, "
            "coalesce(host(client_addr), 'local') AS addr, count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    return [f"{r['n']} from {r['app']}@{r['addr']}" for r in rows]
