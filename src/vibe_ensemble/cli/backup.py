"""`vibe-ensemble backup …`: create, list, verify, prune and restore backups (docs/backups.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from vibe_ensemble.cli.common import cli_caller, fail, settings_problem
from vibe_ensemble.ops.config import Settings, load_settings
from vibe_ensemble.ops.terminal import table_console
from vibe_ensemble.store.backup import DEFAULT_KEEP_DAILY, DEFAULT_KEEP_WEEKLY, Backups
from vibe_ensemble.store.backup_manifest import Manifest
from vibe_ensemble.store.backup_storage import BackupError, open_storage

backup_app = typer.Typer(
    help="Back up, verify, prune and restore the database (SQLite or PostgreSQL).", no_args_is_help=True
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages are matched by scripts
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


def _backups(settings: Settings, location: str | None) -> Backups:
    try:
        storage = open_storage(
            location or settings.effective_backup_location, s3_endpoint_url=settings.backup_s3_endpoint_url
        )
        return Backups(settings.effective_database_url, storage, pg_bin_dir=settings.pg_bin_dir)
    except BackupError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except BackupError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _action(name: str) -> str:
    """The audit action of a backup act (imported here: the services are loaded only when needed)."""
    from vibe_ensemble.services import backups

    action: str = getattr(backups, name)
    return action


async def _record(settings: Settings, action: str, outcome: str = "ok", **details: Any) -> None:
    """Record the act in the database's audit log (backup age for /metrics and doctor comes from it)."""
    from vibe_ensemble.runtime import Runtime

    runtime = Runtime(settings)
    try:
        await runtime.start(own=False)
        await runtime.services.backups.record(cli_caller(), action, outcome, **details)
    except Exception as exc:
        err.print(
            f"[yellow]warning:[/yellow] not recorded in the audit log ({exc}); "
            "the backup age on /metrics and in doctor does not count it"
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
    backups = _backups(settings, to)

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
    err.print(
        f"backup {m.id} written to {backups.storage.location}: {_size(m.size)}, {rows} rows, "
        f"revision {m.schema_revision}, {m.seconds:.2f} s"
    )
    print(m.id)


@backup_app.command("list")
def list_(
    store: StoreOpt = None, as_json: JsonOpt = False, config: ConfigOpt = None, database_url: DbOpt = None
) -> None:
    """List the backups in the location, oldest first."""
    backups = _backups(_settings(config, database_url), store)
    manifests = _run(backups.manifests)
    if as_json:
        print(json.dumps([_manifest_json(m) for m in manifests]))
        return
    table = Table("id", "label", "created (UTC)", "backend", "revision", "size", "messages", "issues")
    for m in manifests:
        table.add_row(
            m.id,
            m.label,
            f"{m.created_at:%Y-%m-%d %H:%M:%S}",
            m.backend,
            m.schema_revision or "-",
            _size(m.size),
            str(m.row_counts.get("messages", "-")),
            str(m.row_counts.get("issues", "-")),
        )
    table_console().print(table)


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
    backups = _backups(settings, store)

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
        err.print(
            f"backup {backup_id} verified: checksum, integrity and row counts match ({check.seconds:.2f} s)"
        )
    else:
        err.print(f"[red]backup {backup_id} failed verification:[/red]")
        for problem in check.problems:
            err.print(f"  - {problem}")
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
    """Delete old 'daily' and 'weekly' backups; backups with other labels are never pruned."""
    backups = _backups(_settings(config, database_url), store)

    async def main() -> list[Manifest]:
        return await backups.prune(keep_daily=keep_daily, keep_weekly=keep_weekly, dry_run=dry_run)

    doomed = _run(main)
    verb = "would delete" if dry_run else "deleted"
    for m in doomed:
        print(f"{verb} {m.id}")
    err.print(f"{verb} {len(doomed)} backups from {backups.storage.location}")


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
    backups = _backups(settings, store)

    async def main() -> Any:
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
    safety = f"; safety backup of the previous state: {result.safety_backup}" if result.safety_backup else ""
    err.print(
        f"restored {backup_id} into {result.target} "
        f"(schema {result.migrated_to}, {result.seconds:.2f} s){safety}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
