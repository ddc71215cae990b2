"""`vibe-ensemble mcp`: the MCP tools over stdio, acting with one token."""

from __future__ import annotations

from typing import Annotated

import typer

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, err, refuse_unsafe_production, run, settings_or_exit
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
    from vibe_ensemble.api.mcp.context import CallContext, bind
    from vibe_ensemble.api.mcp.profiles import profile_of

    settings = settings_or_exit(config, existing=True, database_url=database_url)
    refuse_unsafe_production(settings)
    if not token:
        err.print("[red]error:[/red] give --token or set VIBE_TOKEN")
        raise typer.Exit(2)

    async def main() -> None:
        runtime = Runtime(settings)
        await runtime.start()
        try:
            caller = await runtime.services.tokens.authenticate(token)
            server = build_mcp(settings, profile=profile_of(caller.tool_profile or settings.tool_profile))
            await runtime.start_live()
            # The process acts as its token's holder: its refusals are its own, not audited.
            with bind(CallContext(runtime.services, caller, audit_denials=False)):
                await server.run_stdio_async()
        finally:
            await runtime.stop()

    run(main)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_stdio)
