"""`vibe-ensemble token …`: create, list and revoke API tokens."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from vibe_ensemble.cli.common import (
    ConfigOpt,
    DbOpt,
    admin_runtime,
    cli_caller,
    database_env,
    err,
    moment_option,
    run,
)
from vibe_ensemble.domain.enums import TokenRole

# The table, the runtime and the services are imported when a command runs, not to parse or help it.

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: Annotated[TokenRole, typer.Option(help="admin, coordinator, worker or viewer.")],
    project: Annotated[str | None, typer.Option(help="Scope the token to one project.")] = None,
    agent: Annotated[str | None, typer.Option(help="Bind the token to one agent (needs --project).")] = None,
    label: Annotated[str, typer.Option(help="A note on who holds it.")] = "",
    expires: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Expiry, ISO 8601 with a timezone, e.g. 2030-01-31T12:00:00Z."),
    ] = None,
    tool_profile: Annotated[str | None, typer.Option(help="core or full MCP tools for this token.")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a token and print it once."""
    expires_at = moment_option("expires_at", expires)  # refused before the database is opened
    runtime = admin_runtime(config, database_url)

    async def main() -> str:
        await runtime.start(own=False)
        try:
            _, secret = await runtime.services.tokens.create(
                cli_caller(),
                role=role,
                project=project,
                agent=agent,
                label=label,
                expires_at=expires_at,
                tool_profile=tool_profile,
            )
            return secret
        finally:
            await runtime.stop()

    secret = run(main, database=runtime.settings.effective_database_url)
    print(secret)
    if sys.stderr.isatty():
        from rich.markup import escape

        from vibe_ensemble.ops.startup import command

        connect = escape(f"{database_env(runtime.settings)}{command()} connect CLIENT --agent NAME")
        err.print(
            "[dim]Shown once: store it now, outside files you commit. "
            f"`{connect}` makes an agent's token and its client's config in one step (docs/clients/).[/dim]",
            soft_wrap=True,
        )


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """List tokens (never their secrets)."""
    from rich.table import Table

    from vibe_ensemble.domain.caller import SYSTEM
    from vibe_ensemble.ops.terminal import cell, table_console

    runtime = admin_runtime(config, database_url)

    async def main() -> list[Any]:
        await runtime.start(own=False)
        try:
            return await runtime.services.tokens.list(SYSTEM)
        finally:
            await runtime.stop()

    credentials = run(main, database=runtime.settings.effective_database_url)
    if as_json:
        print(json.dumps([credential_json(c) for c in credentials]))
        return
    table = Table(
        "id", "prefix", "role", "project", "agent", "tools", "label", "created", "expires", "revoked"
    )
    for c in credentials:
        table.add_row(  # labels and agent names are shown literally, never as markup
            *(
                cell(v)
                for v in (
                    c.id,
                    c.prefix + "…",
                    c.role.value,
                    c.project or "*",
                    c.agent or "",
                    c.tool_profile or "default",  # the server's VIBE_TOOL_PROFILE
                    c.label,
                    f"{c.created_at:%Y-%m-%d %H:%M}",
                    f"{c.expires_at:%Y-%m-%d %H:%M}" if c.expires_at else "",
                    f"{c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "",
                )
            )
        )
    table_console().print(table)


def credential_json(c: Any) -> dict[str, Any]:
    """A token's record for `--json`: what the table shows, times in ISO 8601 (never the secret)."""
    return {
        "id": c.id,
        "prefix": c.prefix,
        "role": c.role.value,
        "project": c.project,
        "agent": c.agent,
        "tool_profile": c.tool_profile,  # null: the server's VIBE_TOOL_PROFILE
        "label": c.label,
        "created_at": c.created_at.isoformat(),
        "expires_at": c.expires_at.isoformat() if c.expires_at else None,
        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        "last_used_at": c.last_used_at.isoformat() if c.last_used_at else None,
    }


@token_app.command("revoke")
def token_revoke(token_id: int, config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Revoke a token; it stops working at once."""
    runtime = admin_runtime(config, database_url)

    async def main() -> datetime | None:
        await runtime.start(own=False)
        try:
            return (await runtime.services.tokens.revoke(cli_caller(), token_id)).revoked_at
        finally:
            await runtime.stop()

    asked = datetime.now(UTC)
    revoked_at = run(main, database=runtime.settings.effective_database_url)
    if revoked_at is not None and revoked_at < asked:  # revoking is idempotent: say it was done before
        err.print(f"token {token_id} was already revoked ({revoked_at:%Y-%m-%d %H:%M:%S} UTC)")
    else:
        err.print(f"revoked token {token_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
