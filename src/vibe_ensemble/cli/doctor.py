"""`vibe-ensemble doctor`: check this installation and say what to fix (services/doctor.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vibe_ensemble.ops.config import load_settings
from vibe_ensemble.ops.terminal import cell, table_console

STYLE = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")
    ] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="The database to check.")] = None,
) -> None:
    """Check configuration, database, migrations, disk, permissions, clock, secrets and backups.

    Exits 1 when a check fails (a warning alone exits 0).
    """
    from vibe_ensemble.cli.common import command_logs, settings_problem
    from vibe_ensemble.services.doctor import Finding, run_checks

    command_logs(logging.CRITICAL)  # every fault is a finding in the table; no log line beside it

    try:
        settings = load_settings(config, database_url=database_url)
    except Exception as exc:
        problem = f"invalid settings: {settings_problem(exc)}"
        findings = [Finding("configuration", "fail", problem, "fix the named setting")]
    else:
        findings = asyncio.run(run_checks(settings))
    failed = any(f.status == "fail" for f in findings)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(f) for f in findings]}))
    else:
        table = Table("check", "", "detail", "what to do", show_lines=False)
        for f in findings:
            # details and fixes carry paths, URLs and drivers' errors: shown literally, never as markup
            table.add_row(cell(f.check), STYLE[f.status], cell(f.detail), cell(f.fix))
        table_console().print(table)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
