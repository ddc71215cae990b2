"""`vibe-ensemble hook claude-code`: what Claude Code runs on its hook events (hooks/claude_code.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

hook_app = typer.Typer(
    help="Hooks an agent's client runs on its events: presence, briefing, mail, lease checks.",
    no_args_is_help=True,
)


@hook_app.command("claude-code")
def claude_code(
    url: Annotated[
        str, typer.Option(help="The server, e.g. http://127.0.0.1:8080 (its /mcp URL works too).")
    ],
    agent: Annotated[str, typer.Option(help="The agent this Claude Code session is.")],
    project: Annotated[str, typer.Option(help="The agent's project.")] = "default",
    role: Annotated[str, typer.Option(help="worker or coordinator: how a new agent registers.")] = "worker",
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The repository (default: $CLAUDE_PROJECT_DIR, else the event's cwd)."),
    ] = None,
) -> None:
    """Answer one Claude Code hook event: the event as JSON on stdin, the answer as JSON on stdout.

    The token comes from VIBE_ENSEMBLE_TOKEN, else from the repository's .vibe-ensemble/token.env
    (where `vibe-ensemble connect` keeps it).
    """
    from vibe_ensemble.cli.clients import TOKEN_VAR, read_token, token_file
    from vibe_ensemble.hooks.claude_code import handle
    from vibe_ensemble.hooks.server import Identity, Server, Unreachable

    try:
        event = json.loads(sys.stdin.read() or "null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        typer.echo(f"vibe-ensemble hook: stdin is not a hook event (JSON): {exc}", err=True)
        raise typer.Exit(1) from None  # a non-blocking error: Claude Code shows it and goes on
    if not isinstance(event, dict):
        typer.echo("vibe-ensemble hook: stdin is not a hook event (a JSON object)", err=True)
        raise typer.Exit(1)
    env_dir = os.environ.get("CLAUDE_PROJECT_DIR")
    repo = (directory or Path(env_dir or event.get("cwd") or ".")).resolve()

    def server() -> Server:
        token = os.environ.get(TOKEN_VAR) or read_token(repo)
        if not token:
            raise Unreachable(
                f"no token: set {TOKEN_VAR} or run `vibe-ensemble connect claude-code` in {repo} "
                f"(it keeps one in {token_file(repo)})"
            )
        return Server(Identity(url=url, token=token, project=project, agent=agent, role=role))

    reply = handle(event, server, repo)
    if reply.output is not None:
        print(json.dumps(reply.output))
    if reply.stderr:
        typer.echo(reply.stderr, err=True)
    raise typer.Exit(reply.code)


def register(app: typer.Typer) -> None:
    """Add `vibe-ensemble hook …` to the command line."""
    app.add_typer(hook_app, name="hook")
