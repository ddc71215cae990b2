"""backup_sqlite.copy_into's `under_lock`: what a restore relies on SQLite's backup API for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vibe_ensemble.store import backup_sqlite


def _database(path: Path, rows: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 500,)] * rows)
    return conn


def test_under_lock_runs_with_the_target_locked_and_its_writes_to_the_source_are_copied(
    tmp_path: Path,
) -> None:
    """While `under_lock` runs, another connection (a server's) cannot write to the target, a reader
    sees the target as it was, and what `under_lock` writes into the source is in the copy (SQLite
    starts a backup over when its source changes)."""
    server = _database(tmp_path / "target.db", 300)
    server.execute("INSERT INTO t (v) VALUES ('written before')")
    _database(tmp_path / "source.db", 100).close()
    seen: list[object] = []

    def under_lock() -> None:
        reader = sqlite3.connect(tmp_path / "target.db", isolation_level=None)
        seen.append(reader.execute("SELECT count(*) FROM t WHERE v = 'written before'").fetchone()[0])
        reader.close()
        writer = sqlite3.connect(tmp_path / "target.db", isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            writer.execute("INSERT INTO t (v) VALUES ('a server write')")
        writer.close()
        source = sqlite3.connect(tmp_path / "source.db", isolation_level=None)
        source.execute("INSERT INTO t (v) VALUES ('carried over')")
        source.close()

    backup_sqlite.copy_into(tmp_path / "source.db", tmp_path / "target.db", under_lock)

    assert seen == [1]
    rows = server.execute("SELECT v FROM t WHERE v <> ?", ("x" * 500,)).fetchall()
    assert rows == [("carried over",)]  # the source's content, with what was written under the lock
    assert server.execute("SELECT count(*) FROM t").fetchone()[0] == 101
    assert server.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    server.execute("INSERT INTO t (v) VALUES ('after')")  # the lock is gone with the copy
    server.close()
