"""`vibe-ensemble doctor`: is this installation healthy, and if not, what to fix.

Each check answers ok, warn or fail with a one-line detail and, when not ok, what to do. Only a
`fail` makes the command exit non-zero; a `warn` is worth a look but does not stop a server.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.startup import command
from vibe_ensemble.services.backups import CREATED
from vibe_ensemble.services.base import open_database
from vibe_ensemble.services.commands import command_for
from vibe_ensemble.store import audit as audit_store
from vibe_ensemble.store import clock, faults, migrate
from vibe_ensemble.store.backup_postgres import PG_TOOL_HELP, find_pg_tool
from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.database import Database, DatabaseError
from vibe_ensemble.store.urls import sqlite_file

Status = Literal["ok", "warn", "fail"]

MIN_FREE_BYTES = 512 * 1024 * 1024  # below this a SQLite file or the backups will soon fill the disk
MIN_FREE_FRACTION = 0.05
CLOCK_WARN_S = 2.0
CLOCK_FAIL_S = 30.0  # leases, presence and token expiry compare times written by several machines
BACKUP_WARN_S = 26 * 3600  # a daily backup plus slack
DB_TIMEOUT_S = 5.0


@dataclass
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""


def _ok(check: str, detail: str) -> Finding:
    return Finding(check, "ok", detail)


def _not_a_directory(path: Path) -> Path | None:
    """What stands where `path`, or a directory above it, should be a directory: `path` itself or
    the nearest of its parents that exists, when that is a file (or a device, a socket, …); None when
    it is a directory, or cannot be looked at (the permissions check says so)."""
    for place in (path, *path.parents):
        try:
            mode = place.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # not there, or under a file: look higher
            continue
        except OSError:
            return None
        return None if stat.S_ISDIR(mode) else place
    return None


def _why(exc: OSError) -> str:
    """An OSError's reason, with its errno's name: `Permission denied (EACCES)`."""
    name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


def _cannot_look(check: str, path: Path, exc: OSError, fix: str) -> Finding:
    """A place doctor cannot even look at (no search permission on a directory above it, a name too
    long, an I/O error): a failure naming it and why, never a traceback."""
    return Finding(check, "fail", f"{path} cannot be looked at: {_why(exc)}", fix)


def _is_file(path: Path) -> bool:
    """A regular file there; False when it is not, or cannot be looked at (the caller says why)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _blocked(path: Path, blocker: Path) -> str:
    """`path` cannot be a directory because `blocker` (itself or a parent) is not one."""
    kind = "a file" if _is_file(blocker) else "something else"
    said = f"{blocker} is {kind}, not a directory"
    return said if blocker == path else f"{path} cannot be made: {said}"


def _not_a_database(path: Path, cli: str) -> Finding:
    """The SQLite file the settings name is missing, or something else stands there. `cli`: how a
    printed command runs vibe-ensemble on this database."""
    blocker = _not_a_directory(path.parent)
    if blocker is not None:
        return Finding(
            "database",
            "fail",
            _blocked(path, blocker),
            f"fix VIBE_DATA_DIR / VIBE_DATABASE_URL, or move {blocker} aside",
        )
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass  # missing: said below
    except OSError as exc:
        fix = "give this user access to the directories above it, or fix VIBE_DATA_DIR / VIBE_DATABASE_URL"
        return _cannot_look("database", path, exc, fix)
    else:
        return Finding(
            "database",
            "fail",
            f"{path} is not a file (a directory or a special file stands where the database should be)",
            "move it aside, or fix VIBE_DATA_DIR / VIBE_DATABASE_URL",
        )
    return Finding(
        "database",
        "fail",
        f"{path} does not exist",
        f"run `{cli} migrate` (or serve with --migrate), or fix VIBE_DATA_DIR / VIBE_DATABASE_URL",
    )


async def run_checks(settings: Settings, *, now: datetime | None = None) -> list[Finding]:
    findings = [*_configuration(settings), _metrics(settings)]
    db: Database | None = None
    missing = sqlite_file(settings.effective_database_url)
    if missing is not None and not _is_file(missing):  # looked at before a Database would create it
        findings.append(_not_a_database(missing, command_for(settings)))
        return findings + _disk(settings, None)
    try:
        db = open_database(settings)
    except DatabaseError as exc:
        findings.append(Finding("database", "fail", str(exc), "set VIBE_DATABASE_URL to a usable database"))
    findings += _disk(settings, db)
    if db is not None:
        try:
            findings += await _database(settings, db, now or datetime.now(UTC))
        finally:
            await db.dispose()
    return findings


def _configuration(settings: Settings) -> list[Finding]:
    reasons = settings.unsafe_reasons()
    if settings.profile == "production":
        if reasons:
            return [Finding("secrets", "fail", r.split(":")[0], r.split(":", 1)[-1].strip()) for r in reasons]
        return [_ok("configuration", "production profile; auth on; secrets set and long enough")]
    detail = f"{settings.profile} profile"
    if reasons:
        return [
            Finding(
                "configuration",
                "warn",
                f"{detail}; production would refuse: {'; '.join(r.split(':')[0] for r in reasons)}",
                "fine for development; set VIBE_PROFILE=production and fix these before going live",
            )
        ]
    return [_ok("configuration", detail)]


def _metrics(settings: Settings) -> Finding:
    """Who may read /metrics (api/metrics.py); production's own check covers a missing token."""
    if settings.metrics_token:
        return _ok("metrics", "/metrics answers only VIBE_METRICS_TOKEN as a bearer token")
    if settings.loopback_only:
        return _ok("metrics", "/metrics is open, on loopback names only (no VIBE_METRICS_TOKEN)")
    return Finding(
        "metrics",
        "warn",
        "/metrics refuses every scrape: no VIBE_METRICS_TOKEN on a server beyond loopback",
        "set VIBE_METRICS_TOKEN to a random secret and give Prometheus the same as its bearer token",
    )


def _disk(settings: Settings, db: Database | None) -> list[Finding]:
    """Free space and permissions where this server writes: the database file (SQLite), the backup
    location, and the data directory when one of them is in it (a pod on PostgreSQL with its
    backups elsewhere has no data directory, and needs none)."""
    findings: list[Finding] = []
    places: dict[str, Path] = {}
    if settings.database_url is None or settings.backup_location is None:
        places["data directory"] = settings.data_dir
    if db is not None and db.path is not None:
        places["database file"] = db.path
    location = settings.effective_backup_location
    if "://" not in location:
        places["backup location"] = Path(location)
    for what, path in places.items():
        own = what == "backup location" and settings.backup_location is not None
        setting = "VIBE_BACKUP_LOCATION" if own else "VIBE_DATA_DIR"
        blocker = _not_a_directory(path) if what != "database file" else None
        if blocker is not None:  # nothing can be written there: no disk to measure
            fix = f"point {setting} at a directory, or move {blocker} aside"
            findings.append(Finding(f"permissions: {what}", "fail", _blocked(path, blocker), fix))
            continue
        unreachable = f"give this user access to it and the directories above it, or point {setting} away"
        try:
            existing = path
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            usage = shutil.disk_usage(existing)
        except OSError as exc:  # not even looked at: no disk to measure either
            findings.append(_cannot_look(f"permissions: {what}", path, exc, unreachable))
            continue
        free = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB"
        if usage.free < MIN_FREE_BYTES or usage.free < usage.total * MIN_FREE_FRACTION:
            findings.append(
                Finding(f"disk: {what}", "fail", f"{path}: {free}", "free space or move it to a larger disk")
            )
        else:
            findings.append(_ok(f"disk: {what}", f"{path}: {free}"))
        try:
            findings += _permissions(what, path)
        except OSError as exc:
            findings.append(_cannot_look(f"permissions: {what}", path, exc, unreachable))
    return findings


def _read_only_fs(path: Path) -> bool:
    """The file system holding `path` (or the nearest of its parents that exists) is mounted
    read-only (EROFS): no chown or chmod makes it writable."""
    for place in (path, *path.parents):
        try:
            return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return False
    return False


def _on_read_only_fs(check: str, path: Path) -> Finding:
    return Finding(
        check,
        "fail",
        f"{path} is on a read-only file system",
        "remount it read-write, or point VIBE_DATA_DIR / VIBE_DATABASE_URL at a writable one",
    )


def _permissions(what: str, path: Path) -> list[Finding]:
    check = f"permissions: {what}"
    if _read_only_fs(path):
        return [_on_read_only_fs(check, path)]
    if not path.exists():
        parent = path.parent if path.suffix else path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            missing = f"{path} does not exist and {parent} is not writable"
            return [Finding(check, "fail", missing, "create it")]
        return [_ok(check, f"{path} will be created")]
    if not os.access(path, os.W_OK | os.R_OK):
        return [Finding(check, "fail", f"{path} is not readable and writable by this user", "chown/chmod it")]
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode) and mode & 0o077:
        return [
            Finding(
                check,
                "warn",
                f"{path} is readable by other users (mode {mode:o}); it holds token hashes and agent mail",
                f"chmod 600 {path}",
            )
        ]
    return [_ok(check, f"{path} (mode {mode:o})")]


async def _database(settings: Settings, db: Database, now: datetime) -> list[Finding]:
    findings: list[Finding] = []
    cli = command_for(settings)  # every command a fix names acts on this database
    if db.path is not None and not _is_file(db.path):  # do not create it by looking
        return [_not_a_database(db.path, cli)]
    try:
        async with asyncio.timeout(DB_TIMEOUT_S), db.read() as conn:
            server_now = await clock.server_now(conn)
    except Exception as exc:
        reason = faults.innermost(exc)  # why, not "the database cannot be reached; retry in 5 s"
        if faults.damaged(exc):
            fix = f"restore a backup: `{cli} backup restore` (docs/backups.md)"
            return [Finding("database", "fail", f"{db.safe_url()} is damaged: {reason}", fix)]
        if db.path is not None and _read_only_fs(db.path):  # SQLite: no host, port or credentials
            return [_on_read_only_fs("database", db.path)]
        fix = (
            "start the database, or fix VIBE_DATABASE_URL (host, port, credentials)"
            if db.path is None
            else "check the file, its -wal and -shm files and its directory, or fix VIBE_DATA_DIR / "
            "VIBE_DATABASE_URL"
        )
        return [Finding("database", "fail", f"{db.safe_url()} is unreachable: {reason}", fix)]
    findings.append(_ok("database", f"{db.safe_url()} reachable"))

    try:
        revision, head = await migrate.current_revision(db), migrate.head_revision()
    except DatabaseError as exc:  # no rights on the tables, several revisions: what and what to do
        return [*findings, Finding("migrations", "fail", str(exc), "")]
    if revision == head:
        findings.append(_ok("migrations", f"current ({head})"))
    else:
        newer = revision is not None and revision not in migrate.KNOWN
        findings.append(
            Finding(
                "migrations",
                "fail",
                f"database at {revision or 'no schema'}, this version needs {head}",
                "a newer vibe-ensemble migrated it: run that version, or restore the backup taken "
                "before the upgrade"
                if newer
                else f"run `{cli} migrate` (or serve with --migrate)",
            )
        )

    if server_now is not None:
        skew = abs((datetime.now(UTC) - server_now).total_seconds())
        status: Status = "fail" if skew > CLOCK_FAIL_S else "warn" if skew > CLOCK_WARN_S else "ok"
        findings.append(
            Finding(
                "clock",
                status,
                f"{skew:.1f} s apart from the database server's clock",
                "" if status == "ok" else "run NTP (chrony, timesyncd) on this host and the database's",
            )
        )
        findings.append(backup_tools(settings.pg_bin_dir, cli))
    else:
        only = "SQLite: this machine's clock is the only one"
        findings.append(_ok("clock", f"{now:%Y-%m-%d %H:%M:%S} UTC ({only})"))

    if revision == head:
        try:
            findings.append(await _backup_age(db, now, cli))
        except Exception as exc:  # the role may read alembic_version and not the audit log
            if not faults.permission_denied(exc):
                raise
            findings.append(Finding("backups", "fail", faults.no_rights(exc, db.safe_url()), ""))
    return findings


def backup_tools(bin_dir: Path | None, cli: str | None = None) -> Finding:
    """Where `backup create` finds pg_dump (VIBE_PG_BIN_DIR, then PATH, then /usr/lib/postgresql);
    the finding's fix is what to do, not the error again. `cli`: how a printed command runs
    vibe-ensemble on this database (`command_for`), the bare program by default."""
    try:
        found = find_pg_tool("pg_dump", bin_dir)
    except BackupError:
        where = f"VIBE_PG_BIN_DIR={bin_dir}, " if bin_dir is not None else ""
        return Finding(
            "backup tools",
            "warn",
            f"pg_dump not found (looked in {where}PATH and /usr/lib/postgresql/*/bin)",
            f"{PG_TOOL_HELP}; then `{cli or command()} backup create` can dump this database",
        )
    if bin_dir is not None and Path(found).parent != bin_dir:
        return Finding(
            "backup tools",
            "warn",
            f"VIBE_PG_BIN_DIR={bin_dir} holds no pg_dump; backups use {found}",
            "point VIBE_PG_BIN_DIR at the directory with the client tools of the server's major "
            "version, or unset it",
        )
    return _ok("backup tools", f"pg_dump: {found}")


async def _backup_age(db: Database, now: datetime, cli: str) -> Finding:
    async with db.read() as conn:
        entries = await audit_store.page(conn, action=CREATED, outcome="ok", limit=1)
    if not entries:
        return Finding(
            "last backup",
            "warn",
            "no backup recorded",
            f"run `{cli} backup create --label daily` and schedule it (docs/backups.md)",
        )
    age = (now - entries[0].time).total_seconds()
    detail = f"{age / 3600:.1f} h ago ({entries[0].details.get('backup', '?')})"
    if age > BACKUP_WARN_S:
        return Finding("last backup", "warn", detail, "backups seem to have stopped: check the backup job")
    return _ok("last backup", detail)
