"""Backups that restore: create, list, verify, prune and restore, for SQLite and PostgreSQL.

- SQLite: SQLite's online backup API copies a consistent snapshot while the server keeps writing
  (WAL readers never block the writer); the copy is gzipped.
- PostgreSQL: `pg_dump --format=custom` (compressed), run on a snapshot exported from a repeatable-read
  transaction in which the row counts are taken too, so manifest and dump describe the same instant.

Every backup has a manifest (`<id>.json`): time, label, backend, schema revision, row counts per table,
size and sha256 of the stored file. `verify` restores into a scratch database and compares. `restore`
takes a safety backup of the target first and rolls back to it when any later step fails.
The two backends live in store/backup_sqlite.py and store/backup_postgres.py, the manifest and its
checks in store/backup_manifest.py, the storage in store/backup_storage.py. See docs/backups.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vibe_ensemble.store import backup_carry, backup_postgres, backup_sqlite, migrate
from vibe_ensemble.store.backup_manifest import (
    BACKENDS,
    Check,
    Manifest,
    RestoreResult,
    UnreadableManifest,
    check_label,
    compare,
    sha256,
)
from vibe_ensemble.store.backup_storage import BackupError, BackupStorage, MissingBackupFile, NoAtomicCreate
from vibe_ensemble.store.backup_target import Target
from vibe_ensemble.store.database import Database, DatabaseError, Owner, OwnerLock
from vibe_ensemble.store.sqlite import private_dirs

DEFAULT_KEEP_DAILY = 30
DEFAULT_KEEP_WEEKLY = 12
SAFETY_LABEL = "pre-restore"


CONFIGURED = "--database-url or VIBE_DATABASE_URL"  # how the configured database is given
EXAMPLE_URLS = {"sqlite": "sqlite:///path/to/vibe.db", "postgresql": "postgresql://user@host:5432/db"}


def _backend(name: str) -> str:
    """A backend as people write it: SQLite, PostgreSQL."""
    return BACKENDS.get(name, name)


def _refuse_unrestorable(backup_id: str, revision: str | None) -> None:
    """Refuse a backup at a schema revision this program does not know (a newer program took it):
    migrations only go forward, so this program could not bring it to its own schema."""
    problem = migrate.unknown_revision(revision)
    if problem is not None:
        raise BackupError(
            f"backup {backup_id} is at {problem}: restore it with the vibe-ensemble that took it (or a "
            "newer one); nothing was changed"
        )


def scratch_target(url: str) -> Target:
    """The PostgreSQL server `verify --scratch-url` names, or a BackupError naming the option."""
    target = Target(url, "--scratch-url")
    if target.backend != "postgresql":
        raise BackupError(
            f"--scratch-url: a PostgreSQL server to restore into (postgresql://user@host:5432/db), not "
            f"{target.backend}"
        )
    return target


@dataclass
class Listing:
    """What a backup location holds: the finished backups, and the manifests that cannot be read."""

    manifests: list[Manifest] = field(default_factory=list)
    unreadable: list[UnreadableManifest] = field(default_factory=list)


@dataclass
class Pruned:
    """What `prune` deleted (or would), and the manifests it could not read and so left alone."""

    deleted: list[Manifest] = field(default_factory=list)
    unreadable: list[UnreadableManifest] = field(default_factory=list)


class Backups:
    """Backups of one database, kept in one storage location."""

    def __init__(
        self,
        database_url: str,
        storage: BackupStorage,
        *,
        pg_bin_dir: Path | None = None,
        pg_tool_timeout_s: float = backup_postgres.DEFAULT_TIMEOUT_S,
    ) -> None:
        self.source = Target(database_url)
        self.storage = storage
        self.pg_bin_dir = pg_bin_dir
        self.pg_tool_timeout_s = pg_tool_timeout_s  # VIBE_PG_TOOL_TIMEOUT_S: one run of pg_dump/pg_restore

    def _pg_restore(self, target: Target, dump: Path, *, clean: bool) -> Awaitable[None]:
        return backup_postgres.restore(
            target, dump, self.pg_bin_dir, clean=clean, timeout_s=self.pg_tool_timeout_s
        )

    def _pg_facts(self, target: Target) -> Awaitable[tuple[str | None, dict[str, int]]]:
        return backup_postgres.read_facts(target, timeout_s=self.pg_tool_timeout_s)

    def _new_id(self, label: str, now: datetime) -> str:
        """A new backup id, reserved in the storage (`unreserve` it once its manifest is written):
        `<time>-<label>`, else `-2`, `-3`, … for more backups with that label in that second.

        An id is taken only when it is reserved and, once it is, no finished backup has it: a
        reservation is given back when its manifest is written, so a backup that listed the location
        before another finished, and reserved after, would otherwise take that one's id and
        overwrite it. Where the storage cannot reserve (an S3 service that ignores conditional
        writes) the id ends in 8 random hex digits instead."""
        base = f"{now:%Y%m%dT%H%M%SZ}-{label}"
        candidate, n = base, 1
        while True:
            try:
                reserved = self.storage.reserve(candidate)
            except NoAtomicCreate:
                return f"{base}-{secrets.token_hex(4)}"
            if reserved:
                if not self.storage.exists(f"{candidate}.json"):
                    return candidate
                self.storage.unreserve(candidate)
            n += 1
            candidate = f"{base}-{n}"

    async def create(self, label: str = "manual", *, source: Target | None = None) -> Manifest:
        """Take a consistent backup of the database while it serves, and store it with its manifest."""
        label = check_label(label)
        src = source or self.source
        started = time.perf_counter()
        now = datetime.now(UTC)
        backup_id = await asyncio.to_thread(self._new_id, label, now)
        try:
            return await self._create(backup_id, label, src, now, started)
        finally:
            await asyncio.to_thread(self.storage.unreserve, backup_id)

    async def _create(
        self, backup_id: str, label: str, src: Target, now: datetime, started: float
    ) -> Manifest:
        with tempfile.TemporaryDirectory(prefix="vibe-backup-") as tmp:
            work = Path(tmp)
            if src.backend == "sqlite":
                assert src.path is not None
                raw = work / "snapshot.db"
                revision, counts = await asyncio.to_thread(backup_sqlite.snapshot, src.path, raw)
                stored = work / "backup.sqlite.gz"
                await asyncio.to_thread(backup_sqlite.gzip_file, raw, stored)
                name = f"{backup_id}.sqlite.gz"
            else:
                stored = work / "backup.pgdump"
                revision, counts = await backup_postgres.dump(
                    src, stored, self.pg_bin_dir, timeout_s=self.pg_tool_timeout_s
                )
                name = f"{backup_id}.pgdump"
            digest = await asyncio.to_thread(sha256, stored)
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
        """Every finished backup (one with a manifest), oldest first; an unreadable manifest is an error
        naming its file (`scan` reads past it)."""
        found = await self.scan()
        if found.unreadable:
            raise found.unreadable[0]
        return found.manifests

    async def scan(self) -> Listing:
        """Every finished backup, oldest first, and apart from them each manifest that cannot be read."""
        names = await asyncio.to_thread(self.storage.names)
        found = Listing()
        for name in names:
            if name.endswith(".json"):
                raw = await asyncio.to_thread(self.storage.get_bytes, name)
                try:
                    found.manifests.append(Manifest.from_json(raw, name))
                except UnreadableManifest as exc:
                    found.unreadable.append(exc)
        found.manifests.sort(key=lambda m: m.created_at)
        return found

    async def manifest(self, backup_id: str) -> Manifest:
        if not backup_id or "/" in backup_id or backup_id.startswith("."):
            raise BackupError(f"{backup_id!r} is not a backup id (see `vibe-ensemble backup list`)")
        name = f"{backup_id}.json"
        try:
            raw = await asyncio.to_thread(self.storage.get_bytes, name)
        except MissingBackupFile:
            raise BackupError(
                f"no backup {backup_id!r} in {self.storage.location} (see `vibe-ensemble backup list`)"
            ) from None
        return Manifest.from_json(raw, name)

    async def _fetch(self, manifest: Manifest, work: Path) -> Path:
        """Download the backup file and check its checksum; returns a restorable file."""
        stored = work / manifest.file
        await asyncio.to_thread(self.storage.get, manifest.file, stored)
        digest = await asyncio.to_thread(sha256, stored)
        if digest != manifest.sha256:
            raise BackupError(
                f"backup {manifest.id} is damaged: its sha256 is {digest[:12]}…, the manifest says "
                f"{manifest.sha256[:12]}…"
            )
        if manifest.backend == "sqlite":
            db = work / "restored.db"
            await asyncio.to_thread(backup_sqlite.gunzip_file, stored, db)
            return db
        return stored

    async def verify(self, backup_id: str, *, scratch_url: str | None = None) -> Check:
        """Restore into a scratch database; check integrity, schema revision and row counts."""
        started = time.perf_counter()
        manifest = await self.manifest(backup_id)
        if manifest.backend == "postgresql" and scratch_url is None and self.source.backend != "postgresql":
            raise BackupError(
                f"backup {backup_id} is a PostgreSQL backup; verifying it restores it into a scratch "
                f"database on a PostgreSQL server, and the configured database ({self.source.safe}) is "
                f"{_backend(self.source.backend)}: name a PostgreSQL server with --scratch-url "
                f"{EXAMPLE_URLS['postgresql']}, or configure a PostgreSQL database ({CONFIGURED})"
            )
        check = Check(backup_id)
        with tempfile.TemporaryDirectory(prefix="vibe-verify-") as tmp:
            try:
                restorable = await self._fetch(manifest, Path(tmp))
            except BackupError as exc:
                check.problems.append(str(exc))
                check.seconds = round(time.perf_counter() - started, 3)
                return check
            problem = migrate.unknown_revision(manifest.schema_revision)
            if problem is not None:
                check.problems.append(
                    f"the backup is at {problem}: this vibe-ensemble cannot restore it; the one that took "
                    "it (or a newer one) can"
                )
            if manifest.backend == "sqlite":
                check.problems += await asyncio.to_thread(backup_sqlite.integrity, restorable)
                if check.ok:
                    with backup_sqlite.connect(restorable) as conn:
                        revision, counts = backup_sqlite.facts(conn)
                    check.problems += compare(manifest, revision, counts)
            else:
                server = scratch_target(scratch_url) if scratch_url else self.source
                async with backup_postgres.scratch_database(server) as scratch:
                    try:
                        await self._pg_restore(scratch, restorable, clean=False)
                    except BackupError as exc:
                        check.problems.append(str(exc))
                    else:
                        revision, counts = await self._pg_facts(scratch)
                        check.problems += compare(manifest, revision, counts)
        check.seconds = round(time.perf_counter() - started, 3)
        return check

    async def prune(
        self,
        *,
        keep_daily: int = DEFAULT_KEEP_DAILY,
        keep_weekly: int = DEFAULT_KEEP_WEEKLY,
        dry_run: bool = False,
    ) -> Pruned:
        """Delete all but the newest `keep_daily` 'daily' and `keep_weekly` 'weekly' backups.

        Backups with any other label (manual ones, pre-restore safety backups) are never pruned. A
        backup whose manifest cannot be read is never deleted (nor counted): it is in `unreadable`,
        for the caller to report, and the readable ones are pruned all the same (a nightly job that
        stopped pruning over one damaged file would fill the disk).
        """
        if keep_daily < 1 or keep_weekly < 1:
            raise BackupError("keep-daily and keep-weekly: keep at least 1 backup of each")
        found = await self.scan()
        pruned = Pruned(unreadable=found.unreadable)
        for label, keep in (("daily", keep_daily), ("weekly", keep_weekly)):
            ours = [m for m in found.manifests if m.label == label]
            pruned.deleted += ours[: max(0, len(ours) - keep)]
        if not dry_run:
            for m in pruned.deleted:
                await asyncio.to_thread(self.storage.delete, f"{m.id}.json")  # unlisted first
                await asyncio.to_thread(self.storage.delete, m.file)
        return pruned

    async def delete(self, backup_ids: list[str]) -> list[Manifest]:
        """Delete these backups, whatever their label (a `manual` or `pre-upgrade` one that is no longer
        wanted): every id is looked up first, so an unknown or unreadable one deletes nothing. Each
        backup's manifest goes first, so a backup half deleted is never listed."""
        found = [await self.manifest(backup_id) for backup_id in dict.fromkeys(backup_ids)]
        for m in found:
            await asyncio.to_thread(self.storage.delete, f"{m.id}.json")  # unlisted first
            await asyncio.to_thread(self.storage.delete, m.file)
        return found

    async def restore(
        self, backup_id: str, *, target_url: str | None = None, force: bool = False
    ) -> RestoreResult:
        """Restore a backup into the target (default: the configured database); see the module doc."""
        started = time.perf_counter()
        manifest = await self.manifest(backup_id)
        target = Target(target_url, "--to") if target_url else self.source
        # What the manifest alone refuses is refused before anything is made or changed.
        if target.backend != manifest.backend:
            wanted = _backend(manifest.backend)
            given = (
                f"the target (--to {target.safe})"
                if target_url
                else f"the configured database ({target.safe})"
            )
            raise BackupError(
                f"backup {backup_id} is a {wanted} backup; {given} is {_backend(target.backend)}: restore "
                f"it into a {wanted} database (--to {EXAMPLE_URLS[manifest.backend]}, or configure "
                f"one with {CONFIGURED}); nothing was changed"
            )
        _refuse_unrestorable(backup_id, manifest.schema_revision)
        lock: OwnerLock | None = None
        new = _NewFiles(target.path) if target.path is not None else None
        with tempfile.TemporaryDirectory(prefix="vibe-restore-") as tmp:
            work = Path(tmp)
            try:
                lock, in_use = await self._claim(target, force=force)
                # Everything that can be checked before the target is touched is checked first.
                restorable = await self._fetch(manifest, work)
                if manifest.backend == "sqlite":
                    problems = await asyncio.to_thread(backup_sqlite.integrity, restorable)
                    if problems:
                        raise BackupError(f"backup {backup_id} is damaged: {'; '.join(problems)}")
                    with backup_sqlite.connect(restorable) as conn:
                        revision, _ = backup_sqlite.facts(conn)
                    if revision is None:  # another program's SQLite file: swapped in, then rolled back
                        raise BackupError(
                            f"backup {backup_id} is not a Vibe Ensemble database (its file has no schema "
                            "revision); nothing was changed"
                        )
                    _refuse_unrestorable(backup_id, revision)  # the file's own, whatever its manifest says
                elif in_use:
                    # Servers write to the target: its row counts after the restore cannot be held
                    # against the manifest's (a write lands as soon as pg_restore commits, and the
                    # restore was rolled back for it, taking writes acknowledged meanwhile with it).
                    # The backup's rows are counted in a scratch database instead, first.
                    await self._check_in_scratch(backup_id, manifest, restorable, target)
                safety = await self._safety_backup(target)
                try:
                    # What must not go back in time with the data is carried over when the target
                    # held some (store/backup_carry.py).
                    revision = await self._apply(
                        target, restorable, manifest, carry=safety is not None, counted=not in_use
                    )
                except Exception as exc:
                    if new is not None and not new.database_existed:
                        raise BackupError(
                            f"restore of {backup_id} failed: {exc}. The target did not exist before; "
                            "what the restore wrote was removed"
                        ) from exc
                    if safety is None:
                        raise BackupError(
                            f"restore of {backup_id} failed: {exc}. The target held no Vibe Ensemble "
                            "data before, so there was no safety backup to roll back to"
                        ) from exc
                    try:
                        await self._roll_back(target, safety, work)
                    except BackupError as failed:  # e.g. the same PostgreSQL that stopped answering
                        raise BackupError(
                            f"restore of {backup_id} failed: {exc}. Rolling it back to the safety backup "
                            f"{safety.id} failed too: {failed}. Restore that backup once the cause is "
                            "mended: vibe-ensemble backup restore " + safety.id
                        ) from exc
                    raise BackupError(
                        f"restore of {backup_id} failed: {exc}. The target was rolled back to the "
                        f"safety backup {safety.id}"
                    ) from exc
            except BaseException:
                if lock is not None:
                    lock.release()
                    lock = None
                if new is not None:
                    new.remove()  # a failed restore leaves no new file (database, lock) or directory
                raise
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

    async def _claim(self, target: Target, *, force: bool) -> tuple[OwnerLock | None, bool]:
        """Refuse when a server uses the target, unless forced; on SQLite hold its owner lock throughout.
        Returns the lock, and whether others use the target (forced)."""
        if target.backend == "sqlite":
            assert target.path is not None
            lock = OwnerLock(target.path)
            try:
                lock.acquire(Owner(process="restore"))
            except DatabaseError as exc:
                if not force:
                    raise BackupError(f"{exc} Stop it before restoring (or pass --force).") from None
                return None, True
            return lock, False
        sessions = await backup_postgres.other_sessions(target)
        if sessions and not force:
            raise BackupError(
                f"{target.safe} is in use ({', '.join(sessions)} connected): stop the servers before "
                "restoring (or pass --force)"
            )
        return None, bool(sessions)

    async def _check_in_scratch(
        self, backup_id: str, manifest: Manifest, restorable: Path, target: Target
    ) -> None:
        """The backup restored into a scratch database on the target's server, its rows counted
        against the manifest: what a restore into a database in use cannot check afterwards."""
        async with backup_postgres.scratch_database(target) as scratch:
            await self._pg_restore(scratch, restorable, clean=False)
            revision, counts = await self._pg_facts(scratch)
        problems = compare(manifest, revision, counts)
        if problems:
            raise BackupError(
                f"backup {backup_id} does not check out: {'; '.join(problems)}; nothing was changed"
            )

    async def _safety_backup(self, target: Target) -> Manifest | None:
        if target.backend == "sqlite":
            assert target.path is not None
            if not target.path.is_file():
                return None
            with backup_sqlite.connect(target.path) as conn:
                if not backup_sqlite.table_names(conn):
                    return None
        else:
            _, counts = await self._pg_facts(target)
            if not counts:
                return None
        return await self.create(SAFETY_LABEL, source=target)

    async def _apply(
        self, target: Target, restorable: Path, manifest: Manifest, *, carry: bool, counted: bool = True
    ) -> str:
        """Replace the target's content, migrate it forward, verify it and, with `carry`, write what it
        keeps from the database it replaces (store/backup_carry.py); returns its revision.

        What is kept is read where no server's write can land after it unseen (`restore --force`: a
        revocation made between the read and the swap was undone): on SQLite under the swap's own
        write lock, on PostgreSQL while such writes are refused (`backup_carry.writes_held`), and
        servers' credential reads too until the carry-over is written.

        SQLite: all of it on the scratch copy, which then replaces the target's content in one step,
        so a restore stopped at any point (killed, a power loss) leaves the old database or the
        restored one with what it keeps, never the restored one without it (revoked tokens valid
        again, event ids gone back). PostgreSQL: `pg_restore` in one transaction, then the rest;
        a restore killed between the two leaves the restored database without what it keeps (the
        CLI lets no SIGTERM or Ctrl-C stop a restore part-way). Without `counted` (servers write to
        the target meanwhile) the restored rows are not counted against the manifest: they were in a
        scratch database (`_check_in_scratch`)."""
        url = target.url.render_as_string(hide_password=False)
        if target.backend == "sqlite":
            assert target.path is not None
            copy = f"sqlite:///{restorable}"
            revision = await self._migrated(copy, manifest, lambda: _sqlite_facts(restorable))
            under_lock: Callable[[], None] | None = None
            if carry:
                loop = asyncio.get_running_loop()

                def under_lock() -> None:  # in copy_into's thread, the target's write lock held
                    carried = asyncio.run_coroutine_threadsafe(self._carry_over(url, copy, manifest), loop)
                    carried.result()

            await asyncio.to_thread(backup_sqlite.copy_into, restorable, target.path, under_lock)
            problems = await asyncio.to_thread(backup_sqlite.integrity, target.path)
            if problems:
                raise BackupError("the restored database does not check out: " + "; ".join(problems))
            return revision
        if not carry:
            await self._pg_restore(target, restorable, clean=True)
            return await self._migrated(url, manifest, lambda: self._pg_facts(target), counted=counted)
        async with backup_carry.writes_held(target, timeout_s=self.pg_tool_timeout_s) as hold:
            carried = await backup_carry.read(url, manifest.created_at)
            await self._pg_restore(target, restorable, clean=True)
            await hold.release_writes()
            revision = await self._migrated(url, manifest, lambda: self._pg_facts(target), counted=counted)
            await self._carry(url, carried, manifest)
        return revision

    async def _migrated(
        self,
        url: str,
        manifest: Manifest,
        read_facts: Callable[[], Awaitable[tuple[str | None, dict[str, int]]]],
        *,
        counted: bool = True,
    ) -> str:
        """Migrate the restored database at `url` forward and check it (its rows too, when
        `counted`); returns its revision."""
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.dispose()
        revision, counts = await read_facts()
        problems = []
        head = migrate.head_revision()
        if revision != head:
            problems.append(f"schema revision is {revision}, expected {head} after migrating")
        if counted and manifest.schema_revision == head:  # no migration ran: every table must match
            problems += compare(manifest, revision, counts)
        if problems:
            raise BackupError("the restored database does not check out: " + "; ".join(problems))
        assert revision is not None
        return revision

    async def _carry_over(self, source: str, dest: str, manifest: Manifest) -> None:
        """What the database at `source` keeps (if anything), written into the one at `dest`."""
        await self._carry(dest, await backup_carry.read(source, manifest.created_at), manifest)

    @staticmethod
    async def _carry(url: str, carried: backup_carry.Carried | None, manifest: Manifest) -> None:
        if carried is not None:
            now = datetime.now(UTC)
            await backup_carry.apply(url, carried, backup=manifest.id, taken_at=manifest.created_at, now=now)

    async def _roll_back(self, target: Target, safety: Manifest, work: Path) -> None:
        rollback = work / "rollback"
        rollback.mkdir()
        restorable = await self._fetch(safety, rollback)
        if target.backend == "sqlite":
            assert target.path is not None
            await asyncio.to_thread(backup_sqlite.copy_into, restorable, target.path)
        else:
            await self._pg_restore(target, restorable, clean=True)


async def _sqlite_facts(path: Path) -> tuple[str | None, dict[str, int]]:
    problems = await asyncio.to_thread(backup_sqlite.integrity, path)
    if problems:
        raise BackupError("the restored database does not check out: " + "; ".join(problems))
    with backup_sqlite.connect(path) as conn:
        return backup_sqlite.facts(conn)


class _NewFiles:
    """What a restore into a SQLite file creates, so that a failed one removes it again: the missing
    directories (created here, 0700), and the database file and its owner lock when they were not there.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.lock_path = db_path.with_name(db_path.name + ".lock")
        self.database_existed = db_path.exists()
        self.lock_existed = self.lock_path.exists()
        try:
            self.directories = private_dirs(db_path.parent)  # before the lock file goes into them
        except OSError as exc:
            raise BackupError(f"cannot create the directory of {db_path}: {exc.strerror}") from exc

    def remove(self) -> None:
        if not self.database_existed:
            backup_sqlite.remove_database(self.db_path)
        if not self.lock_existed:
            self.lock_path.unlink(missing_ok=True)
        for directory in reversed(self.directories):
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                directory.rmdir()
