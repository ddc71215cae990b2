"""`vibe-ensemble connect CLIENT`: a token for the agent and its client's MCP config, in one step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vibe_ensemble.cli.client_hooks import HOOK_CONFIGS, hook_command, plan_hooks
from vibe_ensemble.cli.clients import (
    CLIENTS,
    TOKEN_VAR,
    ConnectError,
    apply,
    plan_config,
    read_token,
    token_file,
    write_token,
)

if TYPE_CHECKING:
    from vibe_ensemble.cli.clients import Change
    from vibe_ensemble.domain.caller import Caller
    from vibe_ensemble.ops.config import Settings


def register(app: typer.Typer) -> None:
    app.command("connect")(connect)


def connect(
    client: Annotated[str, typer.Argument(help=f"The agent's client: {', '.join(CLIENTS)}.")],
    agent: Annotated[
        str | None, typer.Option(help="The agent's name (default: the directory's name).")
    ] = None,
    role: Annotated[str, typer.Option(help="worker or coordinator.")] = "worker",
    project: Annotated[str | None, typer.Option(help="The project (default: the default project).")] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="The repository the agent works in (configs and token go here).")
    ] = Path("."),
    url: Annotated[
        str | None, typer.Option(help="The server's MCP URL (default: from the settings).")
    ] = None,
    hooks: Annotated[
        bool,
        typer.Option(
            "--hooks",
            help="Also write the client's hooks (presence, briefing, mail, a lease check before each "
            "edit) into its hooks file (docs/clients/).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a token kept in .vibe-ensemble/token.env that is not this agent's (or no "
            "longer works); without it, connect refuses to lose it.",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (or VIBE_CONFIG).")
    ] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="The server's database.")] = None,
) -> None:
    """Make (or reuse) the agent's token and write CLIENT's MCP config, merged with what is there."""
    from vibe_ensemble.cli.common import database_env, expected_failure, require_existing_database
    from vibe_ensemble.ops.config import load_settings
    from vibe_ensemble.ops.startup import StartupError
    from vibe_ensemble.store.database import DatabaseError, parse_url

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(1)

    if role not in ("worker", "coordinator"):
        raise fail(f"--role {role!r}: an agent's token is worker or coordinator")
    directory = directory.resolve()
    agent = agent or directory.name
    try:
        settings = load_settings(config, database_url=database_url)
        parse_url(settings.effective_database_url)
        require_existing_database(settings.effective_database_url)
        change = plan_config(client, directory, url or settings.mcp_url)
        hook_change = None
        if hooks:
            who = (url or settings.mcp_url, project or settings.default_project, agent, role)
            command = hook_command(client, *who, directory)
            hook_change = plan_hooks(client, directory, command, pending=change)
    except (StartupError, ConnectError, DatabaseError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        raise fail(f"invalid settings: {exc}") from None
    project = project or settings.default_project
    wanted = Wanted(client, agent, role, project)
    try:
        secret, new = asyncio.run(_token(settings, directory, wanted, dry_run=dry_run, force=force))
    except ConnectError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        message = expected_failure(exc, settings.effective_database_url)
        if message is None:
            raise
        raise fail(message) from None

    mcp_url = url or settings.mcp_url
    no_server = _no_server_at(mcp_url)
    _write(change, f"{CLIENTS[client].title}: server {mcp_url}", "already has this server", dry_run=dry_run)
    if hook_change is not None:
        what = f"{CLIENTS[client].title} hooks; {HOOK_CONFIGS[client].note}"
        _write(hook_change, what, "already has these hooks", dry_run=dry_run)
    _report_token(directory, wanted, secret, new=new, dry_run=dry_run, database=database_env(settings))
    if no_server is not None:
        # Connecting before the server starts is fine; a config pointing at the wrong port is not.
        typer.echo(
            f"warning: {no_server}. The config points the client at {mcp_url}: if the server runs on "
            "another port or host (`make run PORT=…`), run connect again with --url and the MCP URL "
            "the server printed at start (e.g. --url http://127.0.0.1:8090/mcp)",
            err=True,
        )


HEALTH_TIMEOUT_S = 2.0


def _no_server_at(mcp_url: str) -> str | None:
    """None when a Vibe Ensemble server answers `/healthz` beside `mcp_url`, else what was found."""
    import httpx2

    from vibe_ensemble.hooks.server import base_url

    health = base_url(mcp_url) + "/healthz"
    try:
        response = httpx2.get(health, timeout=HEALTH_TIMEOUT_S)
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        return f"no Vibe Ensemble server answers at {health} ({exc or type(exc).__name__})"
    try:
        answered = response.json()
    except ValueError:
        answered = None
    if response.status_code != 200 or answered != {"status": "ok"}:
        return f"{health} answered HTTP {response.status_code}, not as a Vibe Ensemble server does"
    return None


def _write(change: Change, what: str, unchanged: str, *, dry_run: bool) -> None:
    """Show a planned change of a config file, and make it unless this is a dry run."""
    if not change.changed:
        typer.echo(f"{change.path} {unchanged}; unchanged")
        return
    typer.echo(f"{'would write' if dry_run else 'wrote'} {change.path} ({what}):")
    typer.echo(change.after, nl=False)
    if not dry_run:
        apply(change)


@dataclass(frozen=True)
class Wanted:
    """The agent `connect` sets up: its client, name, role and project."""

    client: str
    agent: str
    role: str
    project: str


async def _token(
    settings: Settings, directory: Path, wanted: Wanted, *, dry_run: bool, force: bool
) -> tuple[str, bool]:
    """The agent's token: the one kept here when it still works for this agent, else a new one.
    A kept token of another agent (or one this database refuses) is replaced only with `force`."""
    from vibe_ensemble.cli.common import cli_caller
    from vibe_ensemble.domain.enums import TokenRole
    from vibe_ensemble.domain.errors import VibeError
    from vibe_ensemble.runtime import Runtime

    runtime = Runtime(settings)
    await runtime.start(own=False)
    try:
        kept = read_token(directory)
        if kept:
            try:
                caller = await runtime.services.tokens.authenticate(kept, throttle=False)
            except VibeError:
                caller = None
            if caller is not None and caller.agent == wanted.agent and caller.project == wanted.project:
                return kept, False
            if not force:
                raise ConnectError(_kept_elsewhere(directory, caller, wanted.agent, settings))
        if dry_run:
            return "", True
        _, secret = await runtime.services.tokens.create(
            cli_caller(),
            role=TokenRole(wanted.role),
            project=wanted.project,
            agent=wanted.agent,
            label=f"connect {wanted.client}",
        )
        return secret, True
    finally:
        await runtime.stop()


def _kept_elsewhere(directory: Path, caller: Caller | None, agent: str, settings: Settings) -> str:
    """Why the token kept in `directory` is not replaced without --force."""
    from vibe_ensemble.store.urls import database_label

    if caller is not None:
        scope = f" in project {caller.project!r}" if caller.project else ""
        whose = (
            f"the token of agent {caller.agent!r}{scope}" if caller.agent else f"a token of no agent{scope}"
        )
    else:
        whose = (
            f"a token the database {database_label(settings.effective_database_url)} does not accept "
            "(revoked, expired, or made on another database)"
        )
    return (
        f"{token_file(directory)} already holds {whose}; connecting agent {agent!r} would replace it. "
        "Give each agent its own directory (--dir), or pass --force to replace it (a token that "
        "still works stays valid until `token revoke`)"
    )


def _report_token(
    directory: Path, wanted: Wanted, secret: str, *, new: bool, dry_run: bool, database: str
) -> None:
    """Keep a new token (git-ignored) and tell how the client gets it."""
    from vibe_ensemble.ops.startup import command

    agent, role, project = wanted.agent, wanted.role, wanted.project
    kept_at = token_file(directory)
    if new:
        if dry_run:
            typer.echo(
                f"would create a {role} token for agent {agent!r} in project {project!r} into {kept_at}"
            )
        else:
            replaced = " (replacing the token kept there)" if read_token(directory) else ""
            write_token(directory, secret, agent)
            typer.echo(
                f"created a {role} token for agent {agent!r} in project {project!r}; kept in {kept_at}"
                + replaced
            )
    else:
        typer.echo(f"reusing the token for agent {agent!r} kept in {kept_at}")
    typer.echo(
        f"The config names ${TOKEN_VAR}, never the token, so it is safe to commit; {kept_at.parent.name}/ "
        "is git-ignored. Start the client with the token in its environment:\n"
        f"  set -a; . {kept_at}; set +a\n"
        f"Check: {database}{command()} token list"
    )
