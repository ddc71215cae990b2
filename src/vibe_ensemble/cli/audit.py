"""`vibe-ensemble audit`: read the audit log."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, admin_runtime, moment_option, run
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.ops.terminal import cell, table_console


def audit(
    action: Annotated[str | None, typer.Option(help="An action, or a family: 'auth.*'.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed.")] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Only entries at or after this time (ISO 8601 with a timezone)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many entries, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Show the audit log: authentication failures, denials, token changes, admin actions."""
    since_at = moment_option("since", since)
    runtime = admin_runtime(config, database_url)

    async def main() -> list[Any]:
        await runtime.start(own=False)
        try:
            page = await runtime.services.audit.page(
                SYSTEM, action=action, actor=actor, outcome=outcome, since=since_at, limit=limit
            )
            return page.items
        finally:
            await runtime.stop()

    entries = run(main, database=runtime.settings.effective_database_url)
    if as_json:
        for e in entries:
            print(json.dumps({**e.__dict__, "time": e.time.isoformat()}, default=str))
        return
    table = Table()
    for column in ("id", "time", "actor", "action", "outcome", "from"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for e in entries:
        # actors, remotes and details hold what clients sent: shown literally, never as markup
        details = ", ".join(f"{k}={v}" for k, v in e.details.items() if v is not None)
        table.add_row(
            *(cell(v) for v in (e.id, f"{e.time:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.outcome, e.remote)),
            cell(details),
        )
    table_console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(audit)
