"""`vibe-ensemble …`: one module per command group, each a thin wrapper over the services.

A command group is a module with `register(app)`; adding one is one entry in `GROUPS`: its name,
its module and the line `--help` shows for it. A module is imported only when its command runs
(or its own help is asked for), so `vibe-ensemble --help` loads none of them and `token …` loads
only `cli/tokens.py`: the database layer, the services and the server load when a command uses them.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

# name -> (module, the one-line help that `vibe-ensemble --help` lists; tests/unit/test_cli_start.py
# checks it against the command's own)
GROUPS: dict[str, tuple[str, str]] = {
    "serve": (
        "serve",
        "Run the server: the dashboard at /, MCP at /mcp, REST at /api/v1, health at /healthz and /readyz.",
    ),
    "migrate": ("migrate", "Apply the database migrations (SQLite or PostgreSQL)."),
    "mcp": ("stdio", "Serve the MCP tools over stdio, acting with the given token."),
    "audit": ("audit", "Show the audit log: authentication failures, denials, token changes, admin actions."),
    "doctor": (
        "doctor",
        "Check configuration, database, migrations, disk, permissions, clock, secrets and backups.",
    ),
    "connect": (
        "connect",
        "Make (or reuse) the agent's token and write CLIENT's MCP config, merged with what is there.",
    ),
    "token": ("tokens", "Create, list and revoke API tokens."),
    "backup": ("backup", "Back up, verify, prune and restore the database (SQLite or PostgreSQL)."),
    "guard": (
        "vibe_ensemble.guard.cli",
        "A git pre-commit hook that refuses commits touching files another agent holds.",
    ),
    "hook": ("hook", "Hooks an agent's client runs on its events: presence, briefing, mail, lease checks."),
}

HELP = "Vibe Ensemble: a coordination server for teams of AI coding agents."


_option_type = TyperOption.display_type_rich


def _flag_type(option: TyperOption, ctx: Any) -> str | None:
    """The type a help page shows after an option, and none after a flag (`--dry-run`, `--help`): a
    flag takes no value. Typer 0.29's rich help shows every flag's type (`--dry-run <bool>`), and
    people then type `--dry-run true`, which fails ("unexpected extra argument (true)")."""
    return None if option.is_flag else _option_type(option, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign,assignment]


def load(name: str) -> TyperCommand | TyperGroup:
    """The command `name`, its module imported now."""
    module_name, _ = GROUPS[name]
    module = importlib.import_module(module_name if "." in module_name else f"{__name__}.{module_name}")
    holder = typer.Typer()
    holder.callback()(lambda: None)  # a group even for one command, so it is found by name
    module.register(holder)
    group = typer.main.get_command(holder)
    assert isinstance(group, TyperGroup)
    command = group.commands[name]
    assert isinstance(command, TyperCommand | TyperGroup)
    return command


class LazyGroup(TyperGroup):
    """The root group: lists every command from `GROUPS` and imports one only to run it."""

    listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | TyperGroup | None:
        if cmd_name not in GROUPS:
            return None
        if self.listing:  # `--help` lists names and their line; that needs no module
            return TyperCommand(cmd_name, help=GROUPS[cmd_name][1])
        return load(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(cls=LazyGroup, help=HELP, no_args_is_help=True)


@app.callback(help=HELP)
def _logs() -> None:
    """Before any command: logs go to stderr, one line each. A command's --help logs nothing, nor
    does a client's hook: it answers on stdout and stderr itself, and runs on every prompt and
    edit of the agent's session, so it does not load the logging library (a third of its time)."""
    if "--help" in sys.argv[1:] or sys.argv[1:2] == ["hook"]:
        return
    from vibe_ensemble.cli.common import command_logs

    command_logs()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # No cyclic GC while a command starts (the heap it builds lives until it exits): `serve` and `mcp`
    # turn it on once started (ops/startup.collect_from_here); a short command runs to its end without.
    gc.disable()
    # At exit, freeze the heap, so the interpreter's last collection skips it (0.2 s of `token list`):
    # the process's memory goes back to the system whole.
    atexit.register(gc.freeze)
    app()


__all__ = ["GROUPS", "app", "load", "main"]
