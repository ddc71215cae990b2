"""Backups that restore: create, list, verify, prune and restore, for SQLite and PostgreSQL.

- SQLite: SQLite's online backup API copies a consistent snapshot while the server keeps writing
  (WAL readers never block the writer); the copy is gzipped.
- PostgreSQL: `pg_dump --format=custom` (compressed), run on a snapshot exported from a repeatable-read
  transaction in which the row counts are taken too, so manifest and dump describe the same instant.

Every backup has a manifest (`<id>.json`): time, label, backend, schema revision, row counts per table,
size and sha256 of the stored file. `verify` restores into a scratch database and compares. `restore`
takes a safety backup of the target first and rolls back to it when any later step fails.
See docs/backups.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from glob import glob
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from vibe_ensemble.store import migrate
from vibe_ensemble.store.backup_storage import BackupError, BackupStorage
from vibe_ensemble.store.database import Database, DatabaseError, OwnerLock, normalise_url, sqlite_path

MANIFEST_FORMAT = 1
LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
DEFAULT_KEEP_DAILY = 30
DEFAULT_KEEP_WEEKLY = 12
SAFETY_LABEL = "pre-restore"


@dataclass
class Manifest:
    id: str
    label: str
    created_at: datetime
    backend: str  # sqlite | postgresql
    schema_revision: str | None
    row_counts: dict[str, int]
    file: str
    size: int
    sha256: str
    source: str  # the database URL, without its password
    seconds: float
    format: int = MANIFEST_FORMAT

    def to_json(self) -> bytes:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            data["created_at"] = datetime.fromisoformat(data["created_at"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise BackupError(f"unreadable manifest: {exc}") from exc


@dataclass
class Check:
    """The outcome of verifying one backup (or a restored database)."""

    id: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RestoreResult:
    id: str
    target: str
    safety_backup: str | None
    migrated_to: str
    seconds: float


def check_label(label: str) -> str:
    if not label or len(label) > 32 or not set(label) <= LABEL_CHARS or label.startswith("-"):
        raise BackupError(f"label {label!r}: use 1-32 lower-case letters, digits and '-' (e.g. daily)")
    return label


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def find_pg_tool(name: str, bin_dir: Path | None) -> str:
    """pg_dump / pg_restore: from `bin_dir`, else PATH, else the newest /usr/lib/postgresql/*/bin."""
    if bin_dir is not None:
        candidate = bin_dir / name
        if candidate.is_file():
            return str(candidate)
        raise BackupError(f"{name} is not in VIBE_PG_BIN_DIR={bin_dir}; nothing was changed")
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if versions:
        return versions[-1]
    raise BackupError(
        f"{name} was not found (looked on PATH and in /usr/lib/postgresql/*/bin): install the PostgreSQL "
        "client tools of the server's major version (Debian: apt-get install postgresql-client) or set "
        "VIBE_PG_BIN_DIR to the directory that holds them; nothing was changed"
    )


def _major_version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


class Target:
    """A database a backup is taken from or restored into."""

    def __init__(self, url: str) -> None:
        self.url: URL = make_url(normalise_url(url))
        self.backend = self.url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise BackupError(f"unsupported database {self.backend!r}: use sqlite or postgresql")
        self.path: Path | None = sqlite_path(self.url) if self.backend == "sqlite" else None

    @property
    def safe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def libpq(self) -> tuple[str, dict[str, str]]:
        """A libpq URL without the password, and the environment that carries it (never on argv)."""
        env = dict(os.environ)
        if self.url.password:
            env["PGPASSWORD"] = str(self.url.password)
        plain = self.url.set(drivername="postgresql", password=None)
        return plain.render_as_string(hide_password=False), env

    def dsn(self) -> str:
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def with_database(self, name: str) -> Target:
        return Target(self.url.set(database=name).render_as_string(hide_password=False))


# --- SQLite ----------------------------------------------------------------------------------


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    return [r[0] for r in rows]


def _sqlite_facts(conn: sqlite3.Connection) -> tuple[str | None, dict[str, int]]:
    tables = _sqlite_tables(conn)
    counts = {
        t: int(conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0])  # noqa: S608  # nosec B608
        for t in tables
    }
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    return revision, counts


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        yield conn
    finally:
        conn.close()


def _sqlite_integrity(path: Path) -> list[str]:
    try:
        with _sqlite(path) as conn:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [f"not a readable SQLite database: {exc}"]
    problems = [] if rows == ["ok"] else [f"integrity_check: {'; '.join(rows[:5])}"]
    if fk:
        problems.append(f"foreign_key_check: {len(fk)} rows point at rows that do not exist")
    return problems


def _sqlite_snapshot(source: Path, dest: Path) -> tuple[str | None, dict[str, int]]:
    """Copy a consistent snapshot of `source` to `dest` (one self-contained file) and describe it."""
    if not source.is_file():
        raise BackupError(f"{source} does not exist: nothing to back up")
    with _sqlite(source) as src, _sqlite(dest) as dst:
        src.backup(dst)  # one step: one read transaction, so one consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")
        return _sqlite_facts(dst)


def _gzip(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, gzip.open(dest, "wb", compresslevel=6) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _gunzip(src: Path, dest: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, dest.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError) as exc:
        raise BackupError(f"the backup file cannot be decompressed: {exc}") from exc


def _sqlite_copy_into(source: Path, target: Path) -> None:
    """Replace the content of `target` with `source` through the backup API (WAL-safe, one step)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _sqlite(source) as src, _sqlite(target) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")


# --- PostgreSQL ------------------------------------------------------------------------------


async def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        tool = Path(argv[0]).name
        message = stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{tool} failed (exit {proc.returncode}): {' / '.join(message[-3:])}")


async def _pg_facts(conn: asyncpg.Connection) -> tuple[str | None, dict[str, int]]:
    tables = [
        r["table_name"]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    ]
    counts = {
        t: int(await conn.fetchval(f"SELECT count(*) FROM {_quote(t)}"))  # noqa: S608  # nosec B608
        for t in tables
    }
    revision = (
        await conn.fetchval("SELECT version_num FROM alembic_version")
        if "alembic_version" in tables
        else None
    )
    return revision, counts


async def _pg_connect(target: Target) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(target.dsn(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(f"cannot connect to {target.safe}: {exc}") from exc


async def _pg_dump(target: Target, dest: Path, bin_dir: Path | None) -> tuple[str | None, dict[str, int]]:
    pg_dump = find_pg_tool("pg_dump", bin_dir)
    url, env = target.libpq()
    conn = await _pg_connect(target)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
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


async def _pg_restore(target: Target, dump: Path, bin_dir: Path | None, *, clean: bool) -> None:
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    url, env = target.libpq()
    argv = [pg_restore, "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges"]
    if clean:
        argv += ["--clean", "--if-exists"]
    await _run([*argv, f"--dbname={url}", str(dump)], env)


async def _pg_read_facts(target: Target) -> tuple[str | None, dict[str, int]]:
    conn = await _pg_connect(target)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _pg_facts(conn)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _pg_scratch(server: Target) -> Any:
    """A new empty database on `server`'s PostgreSQL, dropped afterwards."""
    name = f"vibe_verify_{secrets.token_hex(4)}"
    conn = await _pg_connect(server)
    try:
        try:
            await conn.execute(f"CREATE DATABASE {_quote(name)}")
        except asyncpg.PostgresError as exc:
            raise BackupError(
                f"cannot create the scratch database {name} on {server.safe}: {exc} "
                "(verify needs the CREATEDB privilege, or pass --scratch-url to another server)"
            ) from exc
        try:
            yield server.with_database(name)
        finally:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def _pg_other_sessions(target: Target) -> list[str]:
    conn = await _pg_connect(target)
    try:
        rows = await conn.fetch(
            "SELECT coalesce(nullif(application_name, ''), 'client') AS app, "
            "coalesce(host(client_addr), 'local') AS addr, count(*) AS n FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    return [f"{r['n']} from {r['app']}@{r['addr']}" for r in rows]


# --- the operations --------------------------------------------------------------------------


class Backups:
    """Backups of one database, kept in one storage location."""

    def __init__(self, database_url: str, storage: BackupStorage, *, pg_bin_dir: Path | None = None) -> None:
        self.source = Target(database_url)
        self.storage = storage
        self.pg_bin_dir = pg_bin_dir

    def _new_id(self, label: str, now: datetime) -> str:
        base = f"{now:%Y%m%dT%H%M%SZ}-{label}"
        taken = {n.rsplit(".", 1)[0] for n in self.storage.names() if n.endswith(".json")}
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    async def create(self, label: str = "manual", *, source: Target | None = None) -> Manifest:
        """Take a consistent backup of the database while it serves, and store it with its manifest."""
        label = check_label(label)
        src = source or self.source
        started = time.perf_counter()
        now = datetime.now(UTC)
        backup_id = self._new_id(label, now)
        with tempfile.TemporaryDirectory(prefix="vibe-backup-") as tmp:
            work = Path(tmp)
            if src.backend == "sqlite":
                assert src.path is not None
                raw = work / "snapshot.db"
                revision, counts = await asyncio.to_thread(_sqlite_snapshot, src.path, raw)
                stored = work / "backup.sqlite.gz"
                await asyncio.to_thread(_gzip, raw, stored)
                name = f"{backup_id}.sqlite.gz"
            else:
                stored = work / "backup.pgdump"
                revision, counts = await _pg_dump(src, stored, self.pg_bin_dir)
                name = f"{backup_id}.pgdump"
            digest = await asyncio.to_thread(_sha256, stored)
            manifest = Manifest(
                id=backup_id,
                label=label,
                created_at=now,
                backend=src.backend,
                schema_revision=revision,
                row_counts=counts,
                file=name,
                size=stored.stat().st_size,
                sha256=digest,
                source=src.safe,
                seconds=0.0,
            )
            await asyncio.to_thread(self.storage.put, name, stored)
            manifest.seconds = round(time.perf_counter() - started, 3)
            await asyncio.to_thread(self.storage.put_bytes, f"{backup_id}.json", manifest.to_json())
        return manifest

    async def manifests(self) -> list[Manifest]:
        """Every finished backup (one with a manifest), oldest first."""
        names = await asyncio.to_thread(self.storage.names)
        manifests = []
        for name in names:
            if name.endswith(".json"):
                manifests.append(Manifest.from_json(await asyncio.to_thread(self.storage.get_bytes, name)))
        return sorted(manifests, key=lambda m: m.created_at)

    async def manifest(self, backup_id: str) -> Manifest:
        if not backup_id or "/" in backup_id or backup_id.startswith("."):
            raise BackupError(f"{backup_id!r} is not a backup id (see `vibe-ensemble backup list`)")
        try:
            raw = await asyncio.to_thread(self.storage.get_bytes, f"{backup_id}.json")
        except BackupError:
            raise BackupError(
                f"no backup {backup_id!r} in {self.storage.location} (see `vibe-ensemble backup list`)"
            ) from None
        return Manifest.from_json(raw)

    async def _fetch(self, manifest: Manifest, work: Path) -> Path:
        """Download the backup file and check its checksum; returns a restorable file."""
        stored = work / manifest.file
        await asyncio.to_thread(self.storage.get, manifest.file, stored)
        digest = await asyncio.to_thread(_sha256, stored)
        if digest != manifest.sha256:
            raise BackupError(
                f"backup {manifest.id} is damaged: its sha256 is {digest[:12]}…, the manifest says "
                f"{manifest.sha256[:12]}…"
            )
        if manifest.backend == "sqlite":
            db = work / "restored.db"
            await asyncio.to_thread(_gunzip, stored, db)
            return db
        return stored

    async def verify(self, backup_id: str, *, scratch_url: str | None = None) -> Check:
        """Restore into a scratch database; check integrity, schema revision and row counts."""
        started = time.perf_counter()
        manifest = await self.manifest(backup_id)
        check = Check(backup_id)
        with tempfile.TemporaryDirectory(prefix="vibe-verify-") as tmp:
            try:
                restorable = await self._fetch(manifest, Path(tmp))
            except BackupError as exc:
                check.problems.append(str(exc))
                check.seconds = round(time.perf_counter() - started, 3)
                return check
            if manifest.backend == "sqlite":
                check.problems += await asyncio.to_thread(_sqlite_integrity, restorable)
                if check.ok:
                    with _sqlite(restorable) as conn:
                        revision, counts = _sqlite_facts(conn)
                    check.problems += _compare(manifest, revision, counts)
            else:
                server = Target(scratch_url) if scratch_url else self.source
                async with _pg_scratch(server) as scratch:
                    try:
                        await _pg_restore(scratch, restorable, self.pg_bin_dir, clean=False)
                    except BackupError as exc:
                        check.problems.append(str(exc))
                    else:
                        revision, counts = await _pg_read_facts(scratch)
                        check.problems += _compare(manifest, revision, counts)
        check.seconds = round(time.perf_counter() - started, 3)
        return check

    async def prune(
        self,
        *,
        keep_daily: int = DEFAULT_KEEP_DAILY,
        keep_weekly: int = DEFAULT_KEEP_WEEKLY,
        dry_run: bool = False,
    ) -> list[Manifest]:
        """Delete all but the newest `keep_daily` 'daily' and `keep_weekly` 'weekly' backups.

        Backups with any other label (manual ones, pre-restore safety backups) are never pruned.
        """
        if keep_daily < 1 or keep_weekly < 1:
            raise BackupError("keep-daily and keep-weekly: keep at least 1 backup of each")
        doomed: list[Manifest] = []
        manifests = await self.manifests()
        for label, keep in (("daily", keep_daily), ("weekly", keep_weekly)):
            ours = [m for m in manifests if m.label == label]
            doomed += ours[: max(0, len(ours) - keep)]
        if not dry_run:
            for m in doomed:
                await asyncio.to_thread(self.storage.delete, f"{m.id}.json")  # unlisted first
                await asyncio.to_thread(self.storage.delete, m.file)
        return doomed

    async def restore(
        self, backup_id: str, *, target_url: str | None = None, force: bool = False
    ) -> RestoreResult:
        """Restore a backup into the target (default: the configured database); see the module doc."""
        started = time.perf_counter()
        manifest = await self.manifest(backup_id)
        target = Target(target_url) if target_url else self.source
        if target.backend != manifest.backend:
            raise BackupError(
                f"backup {backup_id} is a {manifest.backend} backup; the target {target.safe} is "
                f"{target.backend}. Restore it into a {manifest.backend} database"
            )
        lock: OwnerLock | None = None
        with tempfile.TemporaryDirectory(prefix="vibe-restore-") as tmp:
            work = Path(tmp)
            try:
                lock = await self._claim(target, force=force)
                # Everything that can be checked before the target is touched is checked first.
                restorable = await self._fetch(manifest, work)
                if manifest.backend == "sqlite":
                    problems = await asyncio.to_thread(_sqlite_integrity, restorable)
                    if problems:
                        raise BackupError(f"backup {backup_id} is damaged: {'; '.join(problems)}")
                safety = await self._safety_backup(target)
                try:
                    revision = await self._apply(target, restorable, manifest)
                except Exception as exc:
                    if safety is None:
                        raise BackupError(
                            f"restore of {backup_id} failed: {exc}. The target held no Vibe Ensemble "
                            "data before, so there was no safety backup to roll back to"
                        ) from exc
                    await self._roll_back(target, safety, work)
                    raise BackupError(
                        f"restore of {backup_id} failed: {exc}. The target was rolled back to the "
                        f"safety backup {safety.id}"
                    ) from exc
            finally:
                if lock is not None:
                    lock.release()
        return RestoreResult(
            id=backup_id,
            target=target.safe,
            safety_backup=safety.id if safety else None,
            migrated_to=revision,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _claim(self, target: Target, *, force: bool) -> OwnerLock | None:
        """Refuse when a server uses the target, unless forced; on SQLite hold its owner lock throughout."""
        if target.backend == "sqlite":
            assert target.path is not None
            lock = OwnerLock(target.path)
            try:
                lock.acquire()
            except DatabaseError as exc:
                if not force:
                    raise BackupError(f"{exc} Stop it before restoring (or pass --force).") from None
                return None
            return lock
        sessions = await _pg_other_sessions(target)
        if sessions and not force:
            raise BackupError(
                f"{target.safe} is in use ({', '.join(sessions)} connected): stop the servers before "
                "restoring (or pass --force)"
            )
        return None

    async def _safety_backup(self, target: Target) -> Manifest | None:
        if target.backend == "sqlite":
            assert target.path is not None
            if not target.path.is_file():
                return None
            with _sqlite(target.path) as conn:
                if not _sqlite_tables(conn):
                    return None
        else:
            _, counts = await _pg_read_facts(target)
            if not counts:
                return None
        return await self.create(SAFETY_LABEL, source=target)

    async def _apply(self, target: Target, restorable: Path, manifest: Manifest) -> str:
        """Replace the target's content, migrate it forward and verify it; returns its revision."""
        if target.backend == "sqlite":
            assert target.path is not None
            await asyncio.to_thread(_sqlite_copy_into, restorable, target.path)
        else:
            await _pg_restore(target, restorable, self.pg_bin_dir, clean=True)
        url = target.url.render_as_string(hide_password=False)
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.dispose()
        if target.backend == "sqlite":
            assert target.path is not None
            problems = await asyncio.to_thread(_sqlite_integrity, target.path)
            with _sqlite(target.path) as conn:
                revision, counts = _sqlite_facts(conn)
        else:
            problems = []
            revision, counts = await _pg_read_facts(target)
        head = migrate.head_revision()
        if revision != head:
            problems.append(f"schema revision is {revision}, expected {head} after migrating")
        if manifest.schema_revision == head:  # no migration ran, so every table must match the manifest
            problems += _compare(manifest, revision, counts)
        if problems:
            raise BackupError("the restored database does not check out: " + "; ".join(problems))
        assert revision is not None
        return revision

    async def _roll_back(self, target: Target, safety: Manifest, work: Path) -> None:
        rollback = work / "rollback"
        rollback.mkdir()
        restorable = await self._fetch(safety, rollback)
        if target.backend == "sqlite":
            assert target.path is not None
            await asyncio.to_thread(_sqlite_copy_into, restorable, target.path)
        else:
            await _pg_restore(target, restorable, self.pg_bin_dir, clean=True)


def _compare(manifest: Manifest, revision: str | None, counts: dict[str, int]) -> list[str]:
    problems = []
    if revision != manifest.schema_revision:
        problems.append(f"schema revision is {revision}, the manifest says {manifest.schema_revision}")
    for table, expected in sorted(manifest.row_counts.items()):
        got = counts.get(table)
        if got != expected:
            problems.append(f"table {table}: {got} rows, the manifest says {expected}")
    extra = sorted(set(counts) - set(manifest.row_counts))
    if extra:
        problems.append(f"tables not in the manifest: {', '.join(extra)}")
    return problems
