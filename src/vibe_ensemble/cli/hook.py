"""`vibe-ensemble hook CLIENT`: what an agent's client runs on its hook events (hooks/).

One command per client with hooks (claude-code, gemini, cursor, codex); each is the same runner with
that client's adapter: the event as JSON on stdin, the answer on stdout and the exit code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from vibe_ensemble.hooks.core import Adapter

hook_app = typer.Typer(
    help="Hooks an agent's client runs on its events: presence, briefing, mail, lease checks.",
    no_args_is_help=True,
)

Url = Annotated[str, typer.Option(help="The server, e.g. http://127.0.0.1:8080 (its /mcp URL works too).")]
Agent = Annotated[str, typer.Option(help="The agent this client's session is.")]
Project = Annotated[str, typer.Option(help="The agent's project.")]
Role = Annotated[str, typer.Option(help="worker or coordinator: how a new agent registers.")]
Directory = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="The repository (default: the client's project directory, else the event's cwd)."
    ),
]


def run(client: str, url: str, agent: str, project: str, role: str, directory: Path | None) -> None:
    """Answer one hook event of `client`. The token comes from VIBE_ENSEMBLE_TOKEN, else from the
    repository's .vibe-ensemble/token.env (where `vibe-ensemble connect` keeps it)."""
    from vibe_ensemble.auth.token_file import TOKEN_VAR, read_token, token_file
    from vibe_ensemble.hooks import adapters
    from vibe_ensemble.hooks.core import event_dir, handle
    from vibe_ensemble.hooks.server import Identity, Server, Unreachable

    adapter: Adapter = adapters()[client]
    try:
        event = json.loads(sys.stdin.read() or "null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        typer.echo(f"vibe-ensemble hook: stdin is not a hook event (JSON): {exc}", err=True)
        raise typer.Exit(1) from None  # a non-blocking error for every client
    if not isinstance(event, dict):
        typer.echo("vibe-ensemble hook: stdin is not a hook event (a JSON object)", err=True)
        raise typer.Exit(1)
    env_dir = os.environ.get(adapter.project_env) if adapter.project_env else None
    repo = (directory or Path(env_dir or event_dir(event) or ".")).resolve()

    def server() -> Server:
        token = os.environ.get(TOKEN_VAR) or read_token(repo)
        if not token:
            raise Unreachable(
                f"no token: set {TOKEN_VAR} or run `vibe-ensemble connect {client}` in {repo} "
                f"(it keeps one in {token_file(repo)})"
            )
        who = Identity(url=url, token=token, project=project, agent=agent, role=role, program=client)
        return Server(who)

    reply = handle(event, adapter, server, repo)
    if reply.output is not None:
        print(json.dumps(reply.output))
    if reply.stderr:
        typer.echo(reply.stderr, err=True)
    raise typer.Exit(reply.code)


# (the command's name, the client's name, where the repository is when --dir is not given)
CLIENTS = (
    ("claude-code", "Claude Code", "$CLAUDE_PROJECT_DIR"),
    ("gemini", "Gemini CLI", "$GEMINI_PROJECT_DIR"),
    ("cursor", "Cursor", "$CURSOR_PROJECT_DIR"),
    ("codex", "Codex CLI", "the event's cwd"),
)


def _command(client: str, title: str, default_dir: str) -> None:
    def command(
        url: Url,
        agent: Agent,
        project: Project = "default",
        role: Role = "worker",
        directory: Directory = None,
    ) -> None:
        run(client, url, agent, project, role, directory)

    command.__doc__ = f"Answer one {title} hook event (default directory: {default_dir})."
    hook_app.command(client)(command)


for _client in CLIENTS:
    _command(*_client)


def register(app: typer.Typer) -> None:
    """Add `vibe-ensemble hook …` to the command line."""
    app.add_typer(hook_app, name="hook")
