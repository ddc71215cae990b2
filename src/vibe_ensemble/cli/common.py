"""What every command shares: the console, the settings and database options, running async work."""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.errors import VibeError
from vibe_ensemble.ops.config import Settings, load_settings
from vibe_ensemble.ops.startup import StartupError, command
from vibe_ensemble.ops.terminal import printable
from vibe_ensemble.store.database import DatabaseError
from vibe_ensemble.store.urls import sqlite_file

if TYPE_CHECKING:  # the runtime (services, metrics) is imported by the commands that run one
    from vibe_ensemble.runtime import Runtime

err = Console(stderr=True)
out = Console()

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="sqlite+aiosqlite:///path or postgresql+asyncpg://…")
]


def settings_or_exit(config: Path | None, *, existing: bool = False, **overrides: Any) -> Settings:
    """The settings, or a one-line error and exit code 2 when they are invalid. With `existing`, a
    SQLite file that is not there is refused (exit 1): this command uses a database, it makes none."""
    try:
        settings = load_settings(config, **overrides)
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {escape(printable(str(exc)))}")
        raise typer.Exit(2) from None
    if existing:
        try:
            require_existing_database(settings.effective_database_url)
        except StartupError as exc:
            err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from None
    return settings


def refuse_unsafe_production(settings: Settings) -> None:
    """In the production profile, refuse to start with unsafe settings (every reason printed)."""
    if settings.profile == "production" and settings.unsafe_reasons():
        for reason in settings.unsafe_reasons():
            err.print(f"[red]refusing to start in production:[/red] {escape(reason)}")
        raise typer.Exit(2)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run async work; an anticipated error is one red line and exit code 1, not a traceback."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except (VibeError, DatabaseError) as exc:
        err.print(f"[red]error:[/red] {escape(printable(str(exc)))}")
        raise typer.Exit(1) from None


def cli_caller() -> Caller:
    """The operator at this terminal: full rights, and in the audit log as `token:cli` from user@host."""
    return replace(SYSTEM, label="cli", remote=f"cli:{getpass.getuser()}@{socket.gethostname()}")


def admin_runtime(config: Path | None, database_url: str | None) -> Runtime:
    """A runtime for an admin command; it does not own the database (`start(own=False)`)."""
    from vibe_ensemble.runtime import Runtime

    return Runtime(settings_or_exit(config, existing=True, database_url=database_url))


def require_existing_database(database_url: str) -> None:
    """For commands that do not migrate: a SQLite file that is not there is not created empty."""
    path = sqlite_file(database_url)
    if path is not None and not path.exists():
        raise StartupError(
            f"no database at {path}: start the server once (`make run`, or "
            f"`{command()} serve --migrate`), or name the one you use with --database-url "
            "(or VIBE_DATABASE_URL, VIBE_DATA_DIR)"
        )
