"""`vibe-ensemble guard …`: install the commit guard in a repository, and the check the hook runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from vibe_ensemble.guard import hook as guard
from vibe_ensemble.ops.terminal import printable
from vibe_ensemble.ops.urls import base_url

guard_app = typer.Typer(
    help="A git pre-commit hook that refuses commits touching files another agent holds.",
    no_args_is_help=True,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line a message: a hook runs in no terminal

RepoOpt = Annotated[Path, typer.Option("--repo", help="The git repository (default: the current directory).")]
WarnOpt = Annotated[bool, typer.Option("--warn", help="Only print a warning; never refuse the commit.")]


UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The server the hook asks unless VIBE_URL says otherwise (its MCP URL, …/mcp, is taken too; "
        "default: this machine's server from the settings, as `connect` uses).",
    ),
]


@guard_app.command("install")
def install(repo: RepoOpt = Path(), warn: WarnOpt = False, url: UrlOpt = None) -> None:
    """Install the pre-commit hook; an existing hook is kept and runs first."""
    base = base_url(url or _settings_url())
    try:
        done = guard.install(repo.resolve(), warn=warn, python=sys.executable, url=base)
    except guard.GuardError as exc:
        err.print(f"[red]error:[/red] {escape(printable(str(exc)))}")
        raise typer.Exit(1) from None
    chained = f" (runs {done.chained.name} first)" if done.chained else ""
    err.print(f"installed {done.hook}{chained}; it asks {base}", markup=False)
    err.print(
        "The hook reads VIBE_URL (default: that server), VIBE_TOKEN (else VIBE_ENSEMBLE_TOKEN, else the "
        ".vibe-ensemble/token.env `connect` keeps), VIBE_AGENT and VIBE_PROJECT from the environment.",
        markup=False,
    )


def _settings_url() -> str:
    """This machine's server, from the settings (VIBE_CONFIG's file, VIBE_… variables) as `connect`
    finds it; settings that do not load are one line naming the setting, never its value."""
    from pydantic import ValidationError

    from vibe_ensemble.ops.config import load_settings

    try:
        return load_settings().mcp_url
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        problem = f"{where}: {first['msg']}"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    err.print(
        f"error: cannot read the settings to find the server ({printable(problem)}); give --url", markup=False
    )
    raise typer.Exit(2)


@guard_app.command("check")
def check(repo: RepoOpt = Path(), warn: WarnOpt = False) -> None:
    """Check the staged files against the leases on the server (what the hook runs)."""
    try:
        outcome = guard.check(repo.resolve(), os.environ, warn=warn)
    except guard.GuardError as exc:
        err.print(
            f"vibe-ensemble guard: warning: {printable(str(exc))}; committing without the lease check.",
            markup=False,
        )
        return
    for line in outcome.lines:  # holders, patterns and reasons are agents' text
        err.print(printable(line), markup=False)
    if outcome.code:
        raise typer.Exit(outcome.code)


def register(app: typer.Typer) -> None:
    """Add `vibe-ensemble guard …` to the command line."""
    app.add_typer(guard_app, name="guard")
