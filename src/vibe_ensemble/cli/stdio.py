"""`vibe-ensemble mcp`: the MCP tools over stdio, acting with one token."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, err, run, settings_or_exit
from vibe_ensemble.runtime import Runtime


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

    settings = settings_or_exit(config, database_url=database_url)
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

    run(main)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_stdio)
