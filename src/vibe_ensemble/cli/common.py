"""What every command shares: the console, the settings and database options, running async work.

Imported by every command module when its command is loaded, so it imports little itself: the
settings, the database layer and the runtime are imported by the functions that use them.
"""

from __future__ import annotations

import getpass
import logging
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vibe_ensemble.ops.terminal import printable

if TYPE_CHECKING:  # imported by the functions that use them, when a command runs
    from asyncio import AbstractEventLoop
    from datetime import datetime

    from vibe_ensemble.domain.caller import Caller
    from vibe_ensemble.ops.config import Settings
    from vibe_ensemble.runtime import Runtime

# Messages are never wrapped: a line cut at the terminal's (or a container log's 80) columns would
# be two records to a log pipeline and no longer match what scripts look for.
err = Console(stderr=True, soft_wrap=True)
out = Console()

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="sqlite+aiosqlite:///path or postgresql+asyncpg://…")
]


def tell(settings: Settings, line: str, event: str, *, level: str = "info", **fields: object) -> None:
    """A server's own news: `line` (rich markup) on stderr for a person, or, with VIBE_LOG_JSON, the
    log line `event` with `fields` (on stdout, with every other log line), so that a log pipeline
    reads every line the server writes."""
    if settings.log_json:
        import structlog

        getattr(structlog.get_logger("vibe_ensemble.serve"), level)(event, **fields)
    else:
        err.print(line, soft_wrap=True)


def settings_or_exit(config: Path | None, *, existing: bool = False, **overrides: Any) -> Settings:
    """The settings, or a one-line error and exit code 2 when they are invalid. With `existing`, a
    SQLite file that is not there is refused (exit 1): this command uses a database, it makes none."""
    from vibe_ensemble.ops.config import load_settings
    from vibe_ensemble.store.database import DatabaseError, parse_url

    try:
        settings = load_settings(config, **overrides)
    except Exception as exc:
        fail(f"invalid settings: {settings_problem(exc)}", 2)
    try:
        parse_url(settings.effective_database_url)
    except DatabaseError as exc:
        fail(str(exc), 2)
    if existing:
        refuse_missing_database(settings)
    return settings


def refuse_missing_database(settings: Settings) -> None:
    """A SQLite file that is not there is refused (exit 1): the command uses a database, it makes none."""
    from vibe_ensemble.ops.startup import StartupError

    try:
        require_existing_database(settings.effective_database_url)
    except StartupError as exc:
        err.print(f"[red]error:[/red] {escape(printable(str(exc)))}", soft_wrap=True)
        raise typer.Exit(1) from None


# Settings whose values are secrets (or may carry a password): an error names them, never their value.
_SECRET_SETTINGS = ("secret", "token", "key", "url")


def settings_problem(exc: Exception) -> str:
    """Invalid settings in one line: each setting by its name and environment variable, the rule it
    breaks and the value given (`port (VIBE_PORT): Input should be a valid integer, … (got 'abc')`),
    never a secret's value. Anything else (an unreadable --config file) is its own message, on one
    line."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from vibe_ensemble.ops.config import Settings

    def named(field: str, where: str) -> str:
        return f"{where} (VIBE_{field.upper()})" if field in Settings.model_fields else where

    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "settings"
            rule = error["msg"].removeprefix("Value error, ")  # a validator's own message names the value
            given = error.get("input")
            secret = any(word in field for word in _SECRET_SETTINGS)
            if error["type"] != "value_error" and not secret and isinstance(given, str | int | float):
                rule += f" (got {given!r:.80})"
            problems.append(f"{named(field, '.'.join(map(str, error['loc'])) or field)}: {rule}")
        return "; ".join(problems)
    found = re.search(r'field "(\w+)"', str(exc)) if isinstance(exc, SettingsError) else None
    if found:  # the environment could not give a list or a table: those are JSON
        field = found.group(1)
        return f'{named(field, field)}: not valid JSON (a list or a table is JSON, e.g. ["a", "b"])'
    return " ".join(str(exc).split())


def refuse_unsafe_production(settings: Settings) -> None:
    """In the production profile, refuse to start with unsafe settings (every reason printed)."""
    if settings.profile == "production" and settings.unsafe_reasons():
        for reason in settings.unsafe_reasons():
            err.print(f"[red]refusing to start in production:[/red] {escape(reason)}")
        raise typer.Exit(2)


def server_loop() -> Callable[[], AbstractEventLoop] | None:
    """uvloop's event loop, or None (asyncio's) where uvloop is not installed: it has no Windows build."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(fn: Callable[[], Awaitable[T]], *, serving: bool = False, database: str | None = None) -> T:
    """Run async work; an anticipated error is one red line and exit code 1, not a traceback.

    `serving` (a server process: `serve`, each of its workers): on uvloop, the event loop in C,
    where the platform has it; a loop turn, a callback, a socket's read and write cost a fraction
    of asyncio's own (bench/RESULTS.md). Short commands keep asyncio's. `database`: the URL the
    work uses, so that a failure to open it names it (`expected_failure`).
    """
    import asyncio

    try:
        with asyncio.Runner(loop_factory=server_loop() if serving else None) as runner:
            return runner.run(fn())  # type: ignore[arg-type]
    except Exception as exc:
        message = expected_failure(exc, database)
        if message is None:
            raise
        fail(message)


def fail(message: str, code: int = 1) -> NoReturn:
    """One red line on stderr (the message shown literally, a token in it cut to its prefix: an HTTP
    library's error may quote a request's headers), then exit with `code`."""
    from vibe_ensemble.auth.tokens import redact

    err.print(f"[red]error:[/red] {escape(printable(redact(message)))}", soft_wrap=True)
    raise typer.Exit(code)


EXAMPLE_MCP_URL = "http://127.0.0.1:8080/mcp"


class UrlError(ValueError):
    """A --url that cannot name a server's MCP endpoint; the message says why, in one line."""


def mcp_endpoint(url: str) -> str:
    """The MCP endpoint `url` names, for every command that takes one (`mcp --url`, `connect --url`):
    `http(s)://host[:port]/path` without a trailing slash, and `/mcp` when no path is given."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlError(f"--url must be an http:// or https:// URL of the server, e.g. {EXAMPLE_MCP_URL}")
    if parts.username or parts.password:
        raise UrlError("--url must not carry credentials: give the token with VIBE_TOKEN or --token-file")
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise UrlError(f"--url has an invalid port: {url}") from None
    return parts._replace(path=parts.path.rstrip("/") or "/mcp", fragment="").geturl()


def expected_failure(exc: BaseException, database: str | None = None) -> str | None:
    """The one line for a failure a person can fix (a refusal, an unreachable database, a file they
    may not read), or None for anything else: a bug keeps its traceback. `database`: the URL in use,
    named when its SQLite file cannot be opened."""
    from vibe_ensemble.domain.errors import VibeError
    from vibe_ensemble.store import faults
    from vibe_ensemble.store.database import DatabaseError

    if isinstance(exc, VibeError) and exc.__cause__ is not None and faults.classify(exc.__cause__):
        exc = exc.__cause__  # "the database cannot be reached; retry in 5 s": say why instead
    elif isinstance(exc, VibeError | DatabaseError):
        return str(exc)
    if isinstance(exc, PermissionError):
        return (
            f"permission denied: {exc.filename or exc.strerror}; this user may not read or write it: "
            "check its owner and mode (`ls -l`), or run as the user who owns the data"
        )
    if faults.permission_denied(exc):
        from vibe_ensemble.store.urls import database_label

        return faults.no_rights(exc, database_label(database) if database else "the database")
    if faults.damaged(exc):
        from vibe_ensemble.store.urls import sqlite_file

        path = sqlite_file(database) if database else None
        where = f" {path}" if path else ""
        return (
            f"the SQLite file{where} is damaged ({faults.innermost(exc)}): restore a backup with "
            "`vibe-ensemble backup restore` (docs/backups.md); `vibe-ensemble backup list` shows them"
        )
    kind = faults.classify(exc)
    if kind == "unavailable" and faults.sqlite_code(exc) == faults.SQLITE_CANTOPEN:
        return _sqlite_hint(exc, database)
    if faults.read_only(exc):  # a SQLite file, its -wal or -shm, or its directory: there is no server
        from vibe_ensemble.store.urls import sqlite_file

        path = sqlite_file(database) if database else None
        where = f" {path}" if path else ""
        return (
            f"the SQLite database{where} is read-only to this process ({faults.innermost(exc)}): make "
            "the file, its -wal and -shm files and its directory writable (`chmod u+w`), or run as "
            "their owner"
        )
    if kind == "unavailable":
        return (
            f"cannot reach the database ({faults.innermost(exc)}): is it running, and is "
            "--database-url (or VIBE_DATABASE_URL) right?"
        )
    if kind == "full":
        return f"the database's disk is full ({faults.innermost(exc)}): free some space and try again"
    return None


def _sqlite_hint(exc: BaseException, database: str | None) -> str:
    """The SQLite file that cannot be opened, and what to check: there is no server to reach."""
    from vibe_ensemble.store import faults
    from vibe_ensemble.store.urls import sqlite_file

    path = sqlite_file(database) if database else None
    where = f"the SQLite database {path.resolve()}" if path is not None else "the SQLite database file"
    return (
        f"cannot open {where} ({faults.innermost(exc)}): check that it exists, is a file (not a "
        f"directory), and that this user ({getpass.getuser()}) may read and write it and its directory; "
        "or name another with --database-url (or VIBE_DATABASE_URL, VIBE_DATA_DIR)"
    )


def moment_option(field: str, value: str | None) -> datetime | None:
    """A time option's text (ISO 8601 with a timezone) as the services take it, or one line naming
    the service's `field` and the rule (exit 1, as the services' own refusals): never a usage box."""
    if value is None:
        return None
    from vibe_ensemble.domain import rules
    from vibe_ensemble.domain.errors import InvalidInput

    try:
        return rules.moment_text(field, value)
    except InvalidInput as exc:
        fail(str(exc))


def cli_caller() -> Caller:
    """The operator at this terminal: full rights, and in the audit log as `token:cli` from user@host."""
    from vibe_ensemble.domain.caller import SYSTEM

    return replace(SYSTEM, label="cli", remote=f"cli:{getpass.getuser()}@{socket.gethostname()}")


def admin_runtime(config: Path | None, database_url: str | None) -> Runtime:
    """A runtime for an admin command; it does not own the database (`start(own=False)`). The
    settings are checked first, so a wrong URL or a missing database is refused before the services
    are loaded."""
    settings = settings_or_exit(config, existing=True, database_url=database_url)
    from vibe_ensemble.runtime import Runtime

    try:
        return Runtime(settings)
    except Exception as exc:
        message = expected_failure(exc, settings.effective_database_url)
        if message is None:
            raise
        fail(message)


def require_existing_database(database_url: str) -> None:
    """For commands that do not migrate: a SQLite file that is not there is not created empty."""
    from vibe_ensemble.ops.startup import StartupError, command
    from vibe_ensemble.store.urls import sqlite_file

    path = sqlite_file(database_url)
    if path is not None and not path.exists():
        raise StartupError(
            f"no database at {path}: start the server once (`make run`, or "
            f"`{command()} serve --migrate`), or name the one you use with --database-url "
            "(or VIBE_DATABASE_URL, VIBE_DATA_DIR)"
        )


def database_env(settings: Settings) -> str:
    """What a printed command needs in front of it to use the same database as `settings`
    (services/commands.py: doctor's fixes say commands the same way)."""
    from vibe_ensemble.services.commands import database_env as env

    return env(settings)


def command_logs(level: int = logging.WARNING) -> None:
    """Logs of a command: one plain line each on stderr, tokens redacted, never a traceback (the
    command reports its own failures in one line). stdout stays the command's output, and the MCP
    channel of `mcp`; `serve` configures the server's logging over this."""
    import structlog

    from vibe_ensemble.auth import tokens

    def scrub(_: Any, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        event.pop("exc_info", None)
        scrubbed: structlog.types.EventDict = tokens.scrub(event)
        return scrubbed

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # e.g. the trace id of the stdio server's tool call
            structlog.processors.add_log_level,
            scrub,
            structlog.processors.LogfmtRenderer(key_order=["level", "event"], drop_missing=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
