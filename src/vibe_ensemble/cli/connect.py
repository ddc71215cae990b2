"""`vibe-ensemble connect CLIENT`: a token for the agent and its client's MCP config, in one step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from vibe_ensemble.auth.token_file import TOKEN_VAR, read_token, token_file
from vibe_ensemble.cli.client_hooks import HOOK_CONFIGS, exclude_locally, hook_command, plan_hooks
from vibe_ensemble.cli.clients import CLIENTS, ConnectError, apply, plan_config, refuse_links, write_token

if TYPE_CHECKING:
    import httpx2

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
        Path | None,
        typer.Option(
            "--dir",
            help="The repository the agent works in (configs and token go here; default: the top level "
            "of the git repository around the current directory, else the current directory).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The server's MCP URL (default: from the settings); http://HOST:PORT means its /mcp."
        ),
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
    from vibe_ensemble.cli.common import (
        UrlError,
        database_env,
        expected_failure,
        fail,
        mcp_endpoint,
        settings_or_exit,
    )

    if role not in ("worker", "coordinator"):
        fail(f"--role {role!r}: an agent's token is worker or coordinator")
    settings = settings_or_exit(config, existing=True, database_url=database_url)
    try:
        mcp_url = mcp_endpoint(url or settings.mcp_url)
    except UrlError as exc:
        fail(str(exc), 2)
    directory = _directory(directory)
    agent = agent or directory.name
    project = project or settings.default_project
    try:
        refuse_links(directory, token_file(directory))  # before a token is made for it
        change = plan_config(client, directory, mcp_url)
        hook_change = None
        if hooks:
            command = hook_command(client, mcp_url, project, agent, role, directory)
            hook_change = plan_hooks(client, directory, command, pending=change)
    except ConnectError as exc:
        fail(str(exc))
    except OSError as exc:  # a config file this user may not read
        fail(f"cannot read {exc.filename}: {exc.strerror}")
    wanted = Wanted(client, agent, role, project)
    try:
        secret, new = asyncio.run(_token(settings, directory, wanted, dry_run=dry_run, force=force))
    except ConnectError as exc:
        fail(str(exc))
    except Exception as exc:
        message = expected_failure(exc, settings.effective_database_url)
        if message is None:
            raise
        fail(message)

    warnings = _check_server(mcp_url, secret, settings)
    _write(change, f"{CLIENTS[client].title}: server {mcp_url}", "already has this server", dry_run=dry_run)
    if hook_change is not None:
        what = f"{CLIENTS[client].title} hooks; {HOOK_CONFIGS[client].note}"
        _write(hook_change, what, "already has these hooks", dry_run=dry_run)
        if HOOK_CONFIGS[client].personal:
            _keep_out_of_git(directory, hook_change.path, dry_run=dry_run)
    hook_file = hook_change.path if hook_change is not None else None
    advice = commit_advice(client, directory, change.path, hook_file, agent)
    typer.echo(advice)
    _report_token(directory, wanted, secret, new=new, dry_run=dry_run, database=database_env(settings))
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)


def _directory(given: Path | None) -> Path:
    """Where the configs and the token go: --dir, else the top level of the git repository around the
    current directory (said, when that is not the current directory), else the current directory."""
    if given is not None:
        from vibe_ensemble.cli.common import fail

        if not given.is_dir():
            problem = "is not a directory" if given.exists() else "does not exist"
            fail(f"--dir {given}: {problem}; give the repository the agent works in (connect creates none)")
        return given.resolve()
    here = Path.cwd()
    top = next((d for d in (here, *here.parents) if (d / ".git").exists()), None)
    if top is None or top == here:
        return here
    typer.echo(f"connecting {top}: the top level of the git repository around {here} (--dir to choose)")
    return top


def _keep_out_of_git(directory: Path, path: Path, *, dry_run: bool) -> None:
    """A personal file stays out of `git status`: listed in the clone's own `.git/info/exclude`."""
    excluded = exclude_locally(directory, path, dry_run=dry_run)
    if excluded is not None:
        exclude, pattern = excluded
        done = "would add" if dry_run else "added"
        typer.echo(f"{done} {pattern} to {exclude}, so git ignores it in this clone (never committed)")


# How long connect waits for the server's answers. A first request past the probes' routes builds
# FastAPI's routers; on a loaded machine that took over 2 s, and a running server read as none.
HEALTH_TIMEOUT_S = 5.0
ANOTHER_PORT = (
    "if the server runs on another port or host (`make run PORT=…`), run connect again with --url and "
    "the MCP URL the server printed at start (e.g. --url http://127.0.0.1:8090/mcp)"
)


def _check_server(mcp_url: str, secret: str, settings: Settings) -> list[str]:
    """What stands between the client and a server at `mcp_url`, as warnings: no Vibe Ensemble server
    answers there, or one answers at another path, or it refuses the token (made on another database).
    None of these stops connect: the server may start later, or be started on the right database."""
    import httpx2

    from vibe_ensemble.ops.urls import base_url
    from vibe_ensemble.store.urls import database_label

    parts = urlsplit(mcp_url)
    candidates = dict.fromkeys([base_url(mcp_url), f"{parts.scheme}://{parts.netloc}"])  # its own, then /
    server: str | None = None
    answered: list[httpx2.Response] = []
    for candidate in candidates:
        try:
            response = httpx2.get(candidate + "/healthz", timeout=HEALTH_TIMEOUT_S)
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            if answered:
                break
            return [
                f"no Vibe Ensemble server answers at {candidate}/healthz ({exc or type(exc).__name__}). "
                f"The config points the client at {mcp_url}: {ANOTHER_PORT}"
            ]
        if _is_healthy(response):
            server = candidate
            break
        answered.append(response)
    if server is None:
        return [
            f"{answered[0].request.url} answered HTTP {answered[0].status_code}, not as a Vibe Ensemble "
            f"server does. The config points the client at {mcp_url}: {ANOTHER_PORT}"
        ]
    warnings = []
    if mcp_url != server + "/mcp":
        warnings.append(
            f"a Vibe Ensemble server answers at {server}, but not at {mcp_url}: the server's MCP URL "
            f"ends in /mcp; run connect again with --url {server}/mcp"
        )
    if secret and _refuses(server, secret):
        warnings.append(
            f"the server at {server} does not accept this token: it was made in the database "
            f"{database_label(settings.effective_database_url)}, not the server's. Run connect again "
            "with the server's database (it prints `database: …` at start) as VIBE_DATA_DIR or "
            "--database-url, and --force to replace the token kept here"
        )
    return warnings


def _is_healthy(response: httpx2.Response) -> bool:
    try:
        return bool(response.status_code == 200 and response.json() == {"status": "ok"})
    except ValueError:
        return False


def _refuses(server: str, secret: str) -> bool:
    """The server answers 401 to the token on a read every role may make (GET /api/v1/projects)."""
    import httpx2

    headers = {"Authorization": f"Bearer {secret}"}
    try:
        response = httpx2.get(f"{server}/api/v1/projects", headers=headers, timeout=HEALTH_TIMEOUT_S)
    except httpx2.HTTPError:
        return False  # it answered /healthz a moment ago: nothing to say about the token
    return response.status_code == 401


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
        if dry_run:  # refused as the real run would be, with nothing written
            await runtime.services.tokens.check_create(
                cli_caller(), project=wanted.project, agent=wanted.agent, label=f"connect {wanted.client}"
            )
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


def commit_advice(client: str, directory: Path, config: Path, hooks: Path | None, agent: str) -> str:
    """Which of the files connect wrote may be committed, and which are personal: the MCP config names
    the token's variable, never the token, but a hook command names this machine's paths and the agent."""

    def shown(path: Path) -> str:
        return str(path.relative_to(directory)) if path.is_relative_to(directory) else str(path)

    names = f"names ${TOKEN_VAR}, never the token"
    personal = f"names this machine's paths and agent {agent!r}: it is personal, keep it out of commits"
    if not config.is_relative_to(directory):
        lines = [
            f"{shown(config)} {names}; it is your own {CLIENTS[client].title} config, not the repository's"
        ]
    elif config == hooks:
        lines = [f"{shown(config)} {names}, but with the hooks it also {personal}"]
    else:
        lines = [f"{shown(config)} {names}, so it is safe to commit"]
    if hooks is not None and hooks != config:
        if HOOK_CONFIGS[client].personal:
            lines.append(f"{shown(hooks)} holds personal settings, not for committing")
        else:
            lines.append(f"{shown(hooks)} {personal}")
    return "\n".join(lines)


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
        f"{kept_at.parent.name}/ is git-ignored. Start the client with the token in its environment:\n"
        f"  set -a; . {kept_at}; set +a\n"
        f"Check: {database}{command()} token list"
    )
