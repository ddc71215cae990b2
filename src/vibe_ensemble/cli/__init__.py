"""`vibe-ensemble …`: one module per command group, each a thin wrapper over the services.

A command group is a module with `register(app)`; adding one is one entry in `GROUPS`.
"""

from __future__ import annotations

import os
from types import ModuleType

import typer

from vibe_ensemble.cli import audit, backup, connect, doctor, hook, migrate, serve, stdio, tokens
from vibe_ensemble.guard import cli as guard

GROUPS: tuple[ModuleType, ...] = (serve, migrate, stdio, tokens, audit, backup, doctor, connect, guard, hook)

HELP = "Vibe Ensemble: a coordination server for teams of AI coding agents."
app = typer.Typer(help=HELP, no_args_is_help=True)


@app.callback(help=HELP)
def _logs() -> None:
    """Before any command (not for --help): logs go to stderr, one line each."""
    from vibe_ensemble.cli.common import command_logs

    command_logs()


for _group in GROUPS:
    _group.register(app)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


__all__ = ["GROUPS", "app", "main"]
