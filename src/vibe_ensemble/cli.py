"""`vibe-ensemble …`: serve, migrate, stdio MCP, and token management. Each command is a thin wrapper."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import VibeError
from vibe_ensemble.guard_cli import guard_app
from vibe_ensemble.ops.config import Settings, load_settings
from vibe_ensemble.ops.logging import configure_logging
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import migrate as migrations
from vibe_ensemble.store.database import Database, DatabaseError

app = typer.Typer(
    help="Vibe Ensemble: a coordination server for teams of AI coding agents.", no_args_is_help=True
)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(guard_app, name="guard")
err = Console(stderr=True)
out = Console()

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="sqlite+aiosqlite:///path or postgresql+asyncpg://…")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except Exception as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except (VibeError, DatabaseError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def client_config(settings: Settings, token: str) -> str:
    """A ready-to-paste `.mcp.json` for Claude Code."""
    snippet = {
        "mcpServers": {
            "vibe-ensemble": {
                "type": "http",
                "url": settings.mcp_url,
                "headers": {"Authorization": f"Bearer {token}"},
            }
        }
    }
    return json.dumps(snippet, indent=2)


@app.command()
def serve(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply migrations before serving.")] = False,
) -> None:
    """Run the server: MCP at /mcp, REST at /api/v1, health at /healthz and /readyz."""
    from vibe_ensemble.api.app import create_app

    settings = _settings(config, database_url=database_url, host=host, port=port)
    configure_logging(settings)
    if settings.profile == "production" and settings.unsafe_reasons():
        for reason in settings.unsafe_reasons():
            err.print(f"[red]refusing to start in production:[/red] {reason}")
        raise typer.Exit(2)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.allowed_hosts:
        err.print(
            f"[yellow]warning:[/yellow] serving on {settings.host} without VIBE_ALLOWED_HOSTS: "
            "MCP DNS-rebinding protection is off; list the host names clients use (docs/security.md)"
        )

    async def main() -> None:
        runtime = Runtime(settings)
        await runtime.start(apply_migrations=migrate)
        try:
            secret = await runtime.bootstrap_admin_token()
            if secret is not None:
                _print_first_start(settings, secret)
            server = _Server(
                runtime,
                uvicorn.Config(
                    create_app(runtime),
                    host=settings.host,
                    port=settings.port,
                    log_level="warning",
                    log_config=None,  # uvicorn logs through ours, where tokens are redacted
                    lifespan="on",
                    proxy_headers=True,
                    forwarded_allow_ips=settings.trusted_proxies,
                    limit_concurrency=settings.limit_concurrency,
                    ws_max_size=settings.max_body_bytes,
                    server_header=False,
                    timeout_graceful_shutdown=settings.shutdown_grace_s,
                ),
            )
            err.print(
                f"Vibe Ensemble serving on http://{settings.host}:{settings.port}  "
                f"(dashboard: /, MCP: {settings.mcp_url})",
                soft_wrap=True,
            )
            await server.serve()
        finally:
            await runtime.stop()

    _run(main)


class _Server(uvicorn.Server):
    """uvicorn's server that also ends the live feeds when told to stop.

    uvicorn waits for open responses before it shuts down, and an event stream never ends by itself.
    """

    def __init__(self, runtime: Runtime, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._loop = asyncio.get_running_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._loop.call_soon_threadsafe(self._runtime.begin_shutdown)
        super().handle_exit(sig, frame)


def _print_first_start(settings: Settings, secret: str) -> None:
    print(
        "\nFirst start: an admin token was created. It is shown this once; keep it safe.\n"
        f"\n  token:   {secret}\n  MCP URL: {settings.mcp_url}\n"
        "\nClaude Code (.mcp.json in your repository):\n"
        f"{client_config(settings, secret)}\n"
        "\nGive each agent its own token:\n"
        f"  vibe-ensemble token create --role worker --project {settings.default_project} --agent NAME\n",
        flush=True,
    )


@app.command()
def migrate(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Apply the database migrations (SQLite or PostgreSQL)."""
    settings = _settings(config, database_url=database_url)

    async def main() -> str:
        db = Database(settings.effective_database_url)
        try:
            await migrations.upgrade(db)
            return db.safe_url()
        finally:
            await db.dispose()

    url = _run(main)
    err.print(f"migrated {url} to {migrations.head_revision()}")


@app.command("mcp")
def mcp_stdio(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    token: Annotated[str | None, typer.Option(help="API token (or VIBE_TOKEN).", envvar="VIBE_TOKEN")] = None,
) -> None:
    """Serve the MCP tools over stdio, acting with the given token.

    On SQLite this process owns the database file, so no HTTP server may run on it
    at the same time; on PostgreSQL any number may.
    """
    from vibe_ensemble.api.mcp import build_mcp

    settings = _settings(config, database_url=database_url)
    if not token:
        err.print("[red]error:[/red] give --token or set VIBE_TOKEN")
        raise typer.Exit(2)

    async def main() -> None:
        runtime = Runtime(settings)
        await runtime.start()
        try:
            caller = await runtime.services.tokens.authenticate(token)
            profile: Literal["core", "full"] = (
                "full" if (caller.tool_profile or settings.tool_profile) == "full" else "core"
            )
            server = build_mcp(runtime.services, settings, profile=profile, stdio_caller=caller)
            await runtime.start_live()
            await server.run_stdio_async()
        finally:
            await runtime.stop()

    _run(main)


def _cli_caller() -> Caller:
    """The operator at this terminal: full rights, and in the audit log as `token:cli` from user@host."""
    return replace(SYSTEM, label="cli", remote=f"cli:{getpass.getuser()}@{socket.gethostname()}")


def _admin_runtime(config: Path | None, database_url: str | None) -> Runtime:
    return Runtime(_settings(config, database_url=database_url))


@token_app.command("create")
def token_create(
    role: Annotated[TokenRole, typer.Option(help="admin, coordinator, worker or viewer.")],
    project: Annotated[str | None, typer.Option(help="Scope the token to one project.")] = None,
    agent: Annotated[str | None, typer.Option(help="Bind the token to one agent (needs --project).")] = None,
    label: Annotated[str, typer.Option(help="A note on who holds it.")] = "",
    expires: Annotated[datetime | None, typer.Option(help="Expiry, ISO 8601 with a timezone.")] = None,
    tool_profile: Annotated[str | None, typer.Option(help="core or full MCP tools for this token.")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a token and print it once."""
    runtime = _admin_runtime(config, database_url)

    async def main() -> str:
        await runtime.start(own=False)
        try:
            _, secret = await runtime.services.tokens.create(
                _cli_caller(),
                role=role,
                project=project,
                agent=agent,
                label=label,
                expires_at=expires,
                tool_profile=tool_profile,
            )
            return secret
        finally:
            await runtime.stop()

    secret = _run(main)
    print(secret)
    if sys.stderr.isatty():
        err.print("[dim]Shown once: store it now. Claude Code config:[/dim]")
        print(client_config(runtime.settings, secret), file=sys.stderr)


@token_app.command("list")
def token_list(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """List tokens (never their secrets)."""
    runtime = _admin_runtime(config, database_url)

    async def main() -> list[Any]:
        await runtime.start(own=False)
        try:
            return await runtime.services.tokens.list(SYSTEM)
        finally:
            await runtime.stop()

    table = Table("id", "prefix", "role", "project", "agent", "label", "created", "expires", "revoked")
    for c in _run(main):
        table.add_row(
            str(c.id),
            c.prefix + "…",
            c.role.value,
            c.project or "*",
            c.agent or "",
            c.label,
            f"{c.created_at:%Y-%m-%d %H:%M}",
            f"{c.expires_at:%Y-%m-%d %H:%M}" if c.expires_at else "",
            f"{c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "",
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Revoke a token; it stops working at once."""
    runtime = _admin_runtime(config, database_url)

    async def main() -> None:
        await runtime.start(own=False)
        try:
            await runtime.services.tokens.revoke(_cli_caller(), token_id)
        finally:
            await runtime.stop()

    _run(main)
    err.print(f"revoked token {token_id}")


@app.command()
def audit(
    action: Annotated[str | None, typer.Option(help="An action, or a family: 'auth.*'.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only entries at or after this time (ISO 8601).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Show the audit log: authentication failures, denials, token changes, admin actions."""
    runtime = _admin_runtime(config, database_url)

    async def main() -> list[Any]:
        await runtime.start(own=False)
        try:
            page = await runtime.services.audit.page(
                SYSTEM, action=action, actor=actor, outcome=outcome, since=since, limit=limit
            )
            return page.items
        finally:
            await runtime.stop()

    entries = _run(main)
    if as_json:
        for e in entries:
            print(json.dumps({**e.__dict__, "time": e.time.isoformat()}, default=str))
        return
    table = Table()
    for column in ("id", "time", "actor", "action", "outcome", "from"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)
        table.add_row(
            str(e.id), f"{e.time:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.outcome, e.remote, details
        )
    out.print(table)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
