"""`vibe-ensemble serve`: the HTTP server (MCP, REST, dashboard, health)."""

from __future__ import annotations

import functools
import os
from typing import Annotated

import structlog
import typer
from rich.markup import escape

from vibe_ensemble.cli.common import (
    ConfigOpt,
    DbOpt,
    err,
    fail,
    refuse_missing_database,
    refuse_unsafe_production,
    run,
    settings_or_exit,
    tell,
)
from vibe_ensemble.cli.workers import METRICS_DIR, serve_workers, share_metrics
from vibe_ensemble.ops import tracing
from vibe_ensemble.ops.health import health_listener
from vibe_ensemble.ops.logging import configure_logging
from vibe_ensemble.ops.startup import StartupError, bind, defer_stop_signals, raise_open_files_limit
from vibe_ensemble.store.urls import database_label

log = structlog.get_logger(__name__)


def serve(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply migrations before serving.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            envvar="VIBE_WORKERS",
            help="Server processes sharing the port (PostgreSQL only; default 1). Or VIBE_WORKERS.",
        ),
    ] = 1,
) -> None:
    """Run the server: the dashboard at /, MCP at /mcp, REST at /api/v1, health at /healthz and /readyz.

    SQLite: the file is in VIBE_DATA_DIR (default: your data directory); other commands need the same.
    """
    defer_stop_signals()  # a stop asked while starting is kept for when it is started (ops/startup.py)
    settings = settings_or_exit(config, database_url=database_url, host=host, port=port)
    configure_logging(settings)
    # What the settings get wrong (a short secret, SQLite with replicas) before what is missing on
    # disk: `no database at /data/vibe.db` hid the refusal that says what to change.
    refuse_unsafe_production(settings)
    if not migrate:
        refuse_missing_database(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.allowed_hosts:
        why = (
            "no Host is checked (DNS-rebinding protection is off); list the host names clients use "
            "(docs/security.md)"
        )
        tell(
            settings,
            f"[yellow]warning:[/yellow] serving on {escape(settings.host)} without VIBE_ALLOWED_HOSTS: {why}",
            "allowed_hosts_unset",
            level="warning",
            host=settings.host,
            message=f"VIBE_ALLOWED_HOSTS is not set: {why}",
        )
    try:
        tracing.endpoint(settings)
    except ValueError as exc:
        fail(f"invalid settings: {exc}", 2)
    before, after = raise_open_files_limit()  # a connection is an open file (ops/startup.py)
    if after != before:
        log.info("open_files_limit_raised", before=before, after=after)
    if workers > 1 and settings.effective_database_url.startswith("sqlite"):
        err.print(
            "[red]error:[/red] --workers needs PostgreSQL: one process owns a SQLite file "
            "(its single writer is what keeps SQLite safe and fast); serve with one worker, "
            "or use --database-url postgresql+asyncpg://…"
        )
        raise typer.Exit(2)
    try:
        # Listen first: a taken port must fail before a database or an admin token is created.
        listener = bind(settings.host, settings.port)
        if settings.port == 0:  # the port the system chose: what the start line and its URLs say
            settings = settings.model_copy(update={"port": listener.getsockname()[1]})
        health = health_listener(settings)
    except StartupError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    database = database_label(settings.effective_database_url)
    tell(settings, f"database: {escape(database)}", "server_starting", database=database, workers=workers)
    if workers > 1 or os.environ.get(METRICS_DIR):
        share_metrics()  # before prometheus_client is imported (by the server module, below)
    from vibe_ensemble.cli import server

    if workers > 1:
        if health is not None:
            health.close()  # it is free: each worker binds its own on it (SO_REUSEPORT)
        prepare = functools.partial(server.prepare, settings, migrate=migrate)
        serve_workers(settings, listener, workers=workers, prepare=prepare, serve=server.serve_here)
        return
    try:
        run(
            lambda: server.serve_here(settings, migrate=migrate, sockets=[listener], health=health),
            serving=True,
            database=settings.effective_database_url,
        )
    finally:
        listener.close()


def register(app: typer.Typer) -> None:
    app.command()(serve)
