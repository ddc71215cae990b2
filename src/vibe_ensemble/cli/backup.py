"""`vibe-ensemble backup …`: create, list, verify, prune, delete and restore backups (docs/backups.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vibe_ensemble.cli.common import cli_caller, expected_failure, fail, settings_problem
from vibe_ensemble.ops.config import Settings, load_settings
from vibe_ensemble.ops.terminal import cell, printable, table_console
from vibe_ensemble.store.backup import (
    DEFAULT_KEEP_DAILY,
    DEFAULT_KEEP_WEEKLY,
    Backups,
    Pruned,
    scratch_target,
)
from vibe_ensemble.store.backup_manifest import Manifest, UnreadableManifest
from vibe_ensemble.store.backup_storage import BackupError, open_storage
from vibe_ensemble.store.backup_target import Target

backup_app = typer.Typer(
    help="Back up, verify, prune and restore the database (SQLite or PostgreSQL).", no_args_is_help=True
)
# Messages are matched by scripts. Paths, URLs and errors in them are shown literally (`say`), never
# read as Rich markup: `[s3]` or a directory named `[bold]` must print as written.
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="The database (default: the configured one).")
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", help="Backup location: a directory or s3://bucket/prefix (default VIBE_BACKUP_LOCATION)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _settings(config: Path | None, database_url: str | None) -> Settings:
    from vibe_ensemble.store.database import DatabaseError, parse_url

    try:
        settings = load_settings(config, database_url=database_url)
    except Exception as exc:
        fail(f"invalid settings: {settings_problem(exc)}", 2)
    try:
        parse_url(settings.effective_database_url)
    except DatabaseError as exc:
        fail(str(exc), 2)
    return settings


def say(markup: str, *texts: object) -> None:
    """A line on stderr: `markup` with each `{}` filled by a text shown literally (escaped, control
    characters made visible): paths, URLs, ids and errors are never read as Rich markup."""
    err.print(markup.format(*(escape(printable(str(t))) for t in texts)))


def _backups(settings: Settings, location: str | None, option: str) -> Backups:
    """`option`: where `location` comes from (--to, --store), named when it is not usable."""
    given = option if location else "VIBE_BACKUP_LOCATION"
    try:
        storage = open_storage(
            location or settings.effective_backup_location, s3_endpoint_url=settings.backup_s3_endpoint_url
        )
        return Backups(
            settings.effective_database_url,
            storage,
            pg_bin_dir=settings.pg_bin_dir,
            pg_tool_timeout_s=settings.pg_tool_timeout_s,
        )
    except BackupError as exc:
        fail(f"{given}: {exc}")


def _check_url(url: str | None, parse: Callable[[str], Target]) -> None:
    """A database URL option (--to, --scratch-url) checked before anything is done: a bad one is one
    line naming the option and what it takes (`parse` raises it), exit 2."""
    if url is not None:
        try:
            parse(url)
        except BackupError as exc:
            fail(str(exc), 2)


@contextlib.contextmanager
def _not_stopped_part_way(what: str) -> Iterator[None]:
    """SIGTERM and Ctrl-C (SIGINT) wait for the block to end: a restore stopped part-way could leave
    the restored data without what it keeps from the database it replaced (store/backup.py). Said
    on stderr when one arrives; the command then ends as it would have (SIGKILL cannot be waited for)."""
    loop = asyncio.get_running_loop()
    stops = (signal.SIGTERM, signal.SIGINT)

    def asked(signum: int) -> None:
        name = signal.Signals(signum).name
        typer.echo(
            f"{name} received: stopping once the {what} has finished (stopping part-way is unsafe)", err=True
        )

    for signum in stops:
        loop.add_signal_handler(signum, asked, signum)
    try:
        yield
    finally:
        for signum in stops:
            loop.remove_signal_handler(signum)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run the work; a BackupError, or a failure a person can fix (a directory they may not write, a
    full disk), is one red line and exit 1; a bug keeps its traceback."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except BackupError as exc:
        fail(str(exc))
    except Exception as exc:
        message = expected_failure(exc)
        if message is None and isinstance(exc, OSError):
            message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
        if message is None:
            raise
        fail(message)


def _action(name: str) -> str:
    """The audit action of a backup act (imported here: the services are loaded only when needed)."""
    from vibe_ensemble.services import backups

    action: str = getattr(backups, name)
    return action


async def _record(settings: Settings, action: str, outcome: str = "ok", **details: Any) -> None:
    """Record the act in the database's audit log (backup age for /metrics and doctor comes from it)."""
    from vibe_ensemble.runtime import Runtime
    from vibe_ensemble.store.urls import sqlite_file

    path = sqlite_file(settings.effective_database_url)
    if path is not None and not path.exists():  # a verify with no database here: none is made for the record
        say("[yellow]warning:[/yellow] not recorded in the audit log: there is no database at {}", path)
        return
    runtime = Runtime(settings)
    try:
        await runtime.start(own=False)
        await runtime.services.backups.record(cli_caller(), action, outcome, **details)
    except Exception as exc:
        say(
            "[yellow]warning:[/yellow] not recorded in the audit log ({}); "
            "the backup age on /metrics and in doctor does not count it",
            exc,
        )
    finally:
        await runtime.stop()


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _manifest_json(m: Manifest) -> dict[str, Any]:
    data = asdict(m)
    data["created_at"] = m.created_at.isoformat()
    return data


@backup_app.command("create")
def create(
    to: Annotated[str | None, typer.Option("--to", help="A directory or s3://bucket/prefix.")] = None,
    label: Annotated[str, typer.Option(help="daily, weekly (pruned), or any other (kept).")] = "manual",
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Take a consistent backup while the server keeps serving."""
    settings = _settings(config, database_url)
    backups = _backups(settings, to, "--to")

    async def main() -> Manifest:
        manifest = await backups.create(label)
        await _record(
            settings,
            _action("CREATED"),
            backup=manifest.id,
            location=backups.storage.location,
            size=manifest.size,
            seconds=manifest.seconds,
        )
        return manifest

    m = _run(main)
    if as_json:
        print(json.dumps(_manifest_json(m)))
        return
    rows = sum(m.row_counts.values())
    say(
        f"backup {{}} written to {{}}: {_size(m.size)}, {rows} rows, revision {{}}, {m.seconds:.2f} s",
        m.id,
        backups.storage.location,
        m.schema_revision,
    )
    print(m.id)


@backup_app.command("list")
def list_(
    store: StoreOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None, database_url: DbOpt = None
) -> None:
    """List the backups in the location, oldest first (an unreadable manifest is named on stderr)."""
    backups = _backups(_settings(config, database_url), store, "--store")
    found = _run(backups.scan)
    _warn_unreadable(found.unreadable, backups, "not listed")
    if as_json:
        print(json.dumps([_manifest_json(m) for m in found.manifests]))
        return
    table = Table("id", "label", "created (UTC)", "backend", "revision", "size", "messages", "issues")
    for m in found.manifests:  # manifests are files anyone with access to the store may have edited
        table.add_row(
            *(
                cell(v)
                for v in (
                    m.id,
                    m.label,
                    f"{m.created_at:%Y-%m-%d %H:%M:%S}",
                    m.backend,
                    m.schema_revision or "-",
                    _size(m.size),
                    m.row_counts.get("messages", "-"),
                    m.row_counts.get("issues", "-"),
                )
            )
        )
    table_console().print(table)


def _warn_unreadable(unreadable: list[UnreadableManifest], backups: Backups, what: str) -> None:
    for exc in unreadable:
        say(
            "[yellow]warning:[/yellow] {} in {} cannot be read ({}): its backup is {}; "
            "check the file, or move it and its backup file away",
            exc.name,
            backups.storage.location,
            exc.problem,
            what,
        )


@backup_app.command("verify")
def verify(
    backup_id: Annotated[str, typer.Argument(help="The backup id (see `backup list`).")],
    store: StoreOpt = None,
    scratch_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL: the server to restore into (default: the configured one)."),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Restore into a scratch database and check integrity, checksum and row counts."""
    settings = _settings(config, database_url)
    _check_url(scratch_url, scratch_target)
    backups = _backups(settings, store, "--store")

    async def main() -> Any:
        check = await backups.verify(backup_id, scratch_url=scratch_url)
        await _record(
            settings,
            _action("VERIFIED"),
            "ok" if check.ok else "failed",
            backup=backup_id,
            problems=check.problems[:5],
        )
        return check

    check = _run(main)
    if as_json:
        print(
            json.dumps({"id": check.id, "ok": check.ok, "problems": check.problems, "seconds": check.seconds})
        )
    elif check.ok:
        say(
            f"backup {{}} verified: checksum, integrity and row counts match ({check.seconds:.2f} s)",
            backup_id,
        )
    else:
        say("[red]backup {} failed verification:[/red]", backup_id)
        for problem in check.problems:
            say("  - {}", problem)
    if not check.ok:
        raise typer.Exit(1)


@backup_app.command("prune")
def prune(
    keep_daily: Annotated[int, typer.Option(help="How many 'daily' backups to keep.")] = DEFAULT_KEEP_DAILY,
    keep_weekly: Annotated[
        int, typer.Option(help="How many 'weekly' backups to keep.")
    ] = DEFAULT_KEEP_WEEKLY,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Delete old 'daily' and 'weekly' backups; backups with other labels are never pruned.

    A backup whose manifest cannot be read is never deleted: the others are pruned, the file is
    named, and the command exits 1 (so a nightly job reports it).
    """
    backups = _backups(_settings(config, database_url), store, "--store")

    async def main() -> Pruned:
        return await backups.prune(keep_daily=keep_daily, keep_weekly=keep_weekly, dry_run=dry_run)

    pruned = _run(main)
    verb = "would delete" if dry_run else "deleted"
    for m in pruned.deleted:
        print(f"{verb} {m.id}")
    say(f"{verb} {len(pruned.deleted)} backups from {{}}", backups.storage.location)
    if pruned.unreadable:
        _warn_unreadable(pruned.unreadable, backups, "kept (not pruned, not counted)")
        count = len(pruned.unreadable)
        fail(f"{count} unreadable manifests in {backups.storage.location}, left alone (see the warnings)")


@backup_app.command("delete")
def delete(
    backup_ids: Annotated[list[str], typer.Argument(help="The backup ids (see `backup list`).")],
    store: StoreOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Delete backups by id, whatever their label ('manual', 'pre-upgrade', 'pre-restore', …).

    Every id is looked up before anything is deleted: an unknown one deletes nothing.
    """
    backups = _backups(_settings(config, database_url), store, "--store")

    async def main() -> list[Manifest]:
        return await backups.delete(backup_ids)

    deleted = _run(main)
    for m in deleted:
        print(f"deleted {m.id}")
    say(f"deleted {len(deleted)} backups from {{}}", backups.storage.location)


@backup_app.command("restore")
def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup id (see `backup list`).")],
    to: Annotated[
        str | None, typer.Option("--to", help="The database to restore into (default: the configured one).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Restore even while a server uses the target.")
    ] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Restore a backup: safety backup first, restore, migrate forward, verify; roll back on failure."""
    settings = _settings(config, database_url)
    _check_url(to, lambda url: Target(url, "--to"))
    backups = _backups(settings, store, "--store")

    async def main() -> Any:
        with _not_stopped_part_way("restore"):
            result = await backups.restore(backup_id, target_url=to, force=force)
        target_settings = settings.model_copy(update={"database_url": to}) if to else settings
        await _record(
            target_settings,
            _action("RESTORED"),
            backup=backup_id,
            safety_backup=result.safety_backup,
            seconds=result.seconds,
        )
        return result

    result = _run(main)
    safety = "; safety backup of the previous state: {}" if result.safety_backup else ""
    say(
        f"restored {{}} into {{}} (schema {{}}, {result.seconds:.2f} s){safety}",
        backup_id,
        result.target,
        result.migrated_to,
        *([result.safety_backup] if result.safety_backup else []),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
