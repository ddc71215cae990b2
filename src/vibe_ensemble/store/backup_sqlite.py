"""SQLite backups: the online backup API copies a consistent snapshot while the server keeps
writing (WAL readers never block the writer); the copy is gzipped, and restored the same way.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.backup_target import quote
from vibe_ensemble.store.sqlite import create_private


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [r[0] for r in rows]


def facts(conn: sqlite3.Connection) -> tuple[str | None, dict[str, int]]:
    tables = table_names(conn)
    counts = {
        t: int(conn.execute(f"SELECT count(*) FROM {quote(t)}").fetchone()[0])  # noqa: S608  # nosec B608
        for t in tables
    }
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    return revision, counts


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        yield conn
    finally:
        conn.close()


def integrity(path: Path) -> list[str]:
    try:
        with connect(path) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database: {exc}"]
    problems = [] if rows == ["ok"] else [f"integrity_check: {'; '.join(rows[:5])}"]
    if fk:
        problems.append(f"foreign_key_check: {len(fk)} rows point at rows that do not exist")
    return problems


def snapshot(source: Path, dest: Path) -> tuple[str | None, dict[str, int]]:
    """Copy a consistent snapshot of `source` to `dest` (one self-contained file) and describe it."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist: nothing to back up")
    with connect(source) as src, connect(dest) as dst:
        src.backup(dst)  # one step: one read transaction, so one consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")
        return facts(dst)


def gzip_file(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, gzip.open(dest, "wb", compresslevel=6) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def gunzip_file(src: Path, dest: Path) -> None:
    """Decompress a stored backup; any damage to the gzip stream (a bad header, a cut-off end, a
    corrupt deflate block, a wrong CRC) is a BackupError, whatever layer notices it."""
    with dest.open("wb") as fout:
        try:
            with gzip.open(src, "rb") as fin:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise BackupError(
                f"the backup file {src.name} is damaged: it cannot be decompressed ({exc})"
            ) from exc


def copy_into(source: Path, target: Path, under_lock: Callable[[], None] | None = None) -> None:
    """Replace the content of `target` with `source` through the backup API (WAL-safe, one transaction
    of the target's).

    `under_lock` runs once the copy holds the target's write lock, before anything of it is
    committed: no other connection (a server's) writes to the target until the copy is, and readers
    still see the target as it was. What it reads there is therefore all the target will ever have
    had, and what it writes into `source` goes into the copy (SQLite starts the copy over when its
    source changes). A restore reads there what it carries over from the database it replaces.

    A new target is created like the server's database: 0600, in directories created 0700."""
    create_private(target)
    with connect(source) as src, connect(target) as dst:
        if under_lock is None:
            src.backup(dst)
        else:
            dst.execute("PRAGMA journal_mode=WAL")  # as the copy leaves it: readers beside its lock
            src.backup(dst, pages=1, progress=_once_locked(under_lock))
        dst.execute("PRAGMA journal_mode=WAL")


def _once_locked(act: Callable[[], None]) -> Callable[[int, int, int], None]:
    """A backup's progress callback that runs `act` after the first step that took the destination's
    write lock (the backup API holds it from there until the copy is committed)."""
    done = False

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal done
        if done or status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # not locked yet: next step
            return
        if status != sqlite3.SQLITE_OK:  # DONE at once: a one-page source, never a Vibe Ensemble one
            raise BackupError("the restored copy was committed before what it carries over was read")
        done = True
        act()

    return progress


def remove_database(path: Path) -> None:
    """Delete a SQLite database file and the files SQLite keeps beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
