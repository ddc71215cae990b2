"""`vibe-ensemble mcp`: the MCP tools over stdio, acting with one token."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, err, refuse_unsafe_production, run, settings_or_exit


def mcp_stdio(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="API token. Prefer VIBE_TOKEN or --token-file: a flag shows in the process table.",
            envvar="VIBE_TOKEN",
        ),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Read the API token from this file (keep it 0600).")
    ] = None,
) -> None:
    """Serve the MCP tools over stdio, acting with the given token.

    On SQLite this process owns the database file, so no HTTP server may run on it
    at the same time; on PostgreSQL any number may.
    """
    from vibe_ensemble.api.mcp import build_mcp
    from vibe_ensemble.api.mcp.context import CallContext, bind
    from vibe_ensemble.api.mcp.profiles import profile_of

    settings = settings_or_exit(config, database_url=database_url)
    refuse_unsafe_production(settings)  # before anything else: an unsafe production config says so first
    settings_or_exit(config, existing=True, database_url=database_url)
    if any(arg == "--token" or arg.startswith("--token=") for arg in sys.argv[1:]):
        err.print(
            "warning: --token puts the token in the process table, where other users of this machine "
            "can read it; set VIBE_TOKEN or use --token-file instead"
        )
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            err.print(f"error: cannot read --token-file {token_file}: {exc.strerror}", markup=False)
            raise typer.Exit(2) from None
    if not token:
        err.print("[red]error:[/red] set VIBE_TOKEN or give --token-file")
        raise typer.Exit(2)

    from vibe_ensemble.runtime import Runtime

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
