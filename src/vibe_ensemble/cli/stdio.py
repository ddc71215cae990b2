"""`vibe-ensemble mcp`: the MCP tools over stdio, acting with one token — on the database, or
forwarded to a running server (`--url`)."""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vibe_ensemble.cli.common import (
    ConfigOpt,
    DbOpt,
    command_logs,
    database_env,
    err,
    fail,
    refuse_unsafe_production,
    run,
    settings_or_exit,
)
from vibe_ensemble.ops.terminal import printable

if TYPE_CHECKING:
    from mcp.server import MCPServer
    from mcp.shared.message import SessionMessage

    from vibe_ensemble.domain.caller import Caller
    from vibe_ensemble.ops.config import Settings
    from vibe_ensemble.services import Services
    from vibe_ensemble.store.database import Owner

TokenOpt = Annotated[
    str | None,
    typer.Option(
        help="API token. Prefer VIBE_TOKEN or --token-file: a flag shows in the process table.",
        envvar="VIBE_TOKEN",
        show_envvar=False,
    ),
]
TokenFileOpt = Annotated[
    Path | None, typer.Option("--token-file", help="Read the API token from this file (keep it 0600).")
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Forward to the server at this MCP URL (e.g. http://127.0.0.1:8080/mcp) instead of "
        "opening the database: a stdio bridge, so stdio-only clients share one server.",
    ),
]


def mcp_stdio(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    url: UrlOpt = None,
) -> None:
    """Serve the MCP tools over stdio, acting with the given token.

    Without --url this opens the database: on SQLite it then serves one agent, and no server may use the file.

    With --url it forwards every message to that running server, which any number of agents share.
    """
    if url is not None:
        if database_url is not None or config is not None:
            fail("--url forwards to a server; --database-url and --config do not apply", 2)
        _bridge(url, _token(token, token_file))
        return
    settings = settings_or_exit(config, database_url=database_url)
    refuse_unsafe_production(settings)  # before anything else: an unsafe production config says so first
    settings_or_exit(config, existing=True, database_url=database_url)
    from vibe_ensemble.ops import tracing

    try:
        tracing.endpoint(settings)
    except ValueError as exc:
        fail(f"invalid settings: {exc}", 2)
    _serve_database(settings, _token(token, token_file))


def _token(token: str | None, token_file: Path | None) -> str:
    """The token from --token-file, VIBE_TOKEN or --token (warned about); exit 2 without one, or with
    one that is not a Vibe Ensemble token (never shown: it may be a secret all the same)."""
    from vibe_ensemble.auth import tokens
    from vibe_ensemble.auth.token_file import TOKEN_VAR, token_in

    flag = any(arg == "--token" or arg.startswith("--token=") for arg in sys.argv[1:])
    if flag:
        err.print(
            "warning: --token puts the token in the process table, where other users of this machine "
            "can read it; set VIBE_TOKEN or use --token-file instead"
        )
    if token_file is not None:
        try:
            text = token_file.read_text(errors="replace")
        except OSError as exc:
            fail(f"cannot read --token-file {token_file}: {exc.strerror}", 2)
        found = token_in(text)
        if found is None:
            fail(
                f"--token-file {token_file} holds no Vibe Ensemble token (its content is not shown): give "
                f"a file with the token alone (vibe_…) or with the line {TOKEN_VAR}=vibe_… as connect "
                "writes it",
                2,
            )
        return found
    if not token:
        fail("set VIBE_TOKEN or give --token-file", 2)
    if not tokens.well_formed(token.strip()):
        where = "--token" if flag else "VIBE_TOKEN"
        fail(f"{where} is not a Vibe Ensemble token (vibe_…); its value is not shown", 2)
    return token.strip()


def _bridge(url: str, token: str) -> None:
    from vibe_ensemble.auth import tokens
    from vibe_ensemble.cli import bridge
    from vibe_ensemble.cli.common import UrlError, mcp_endpoint
    from vibe_ensemble.ops.startup import collect_from_here

    # Like `fail`, every line the bridge prints has a token in it cut to its prefix.
    def complain(line: str) -> None:
        err.print(f"vibe-ensemble mcp: {tokens.redact(printable(line))}", markup=False, soft_wrap=True)

    try:
        target = mcp_endpoint(url)
    except UrlError as exc:
        fail(str(exc), 2)
    if bridge.in_clear(target):
        complain(
            f"warning: {target} is plain http to another host: the token crosses the network unencrypted"
        )

    async def main() -> None:
        await bridge.probe(target, token)
        collect_from_here()  # started: the collector, off while starting (cli.main), runs from here
        await bridge.serve(target, token, complain)

    try:
        run(main)
    except bridge.BridgeError as exc:
        fail(str(exc))


def _serve_database(settings: Settings, token: str) -> None:
    from vibe_ensemble.api.mcp import build_mcp
    from vibe_ensemble.api.mcp.context import CallContext, bind
    from vibe_ensemble.api.mcp.notifier import ListenedBus, ResourceNotifier
    from vibe_ensemble.api.mcp.profiles import profile_of
    from vibe_ensemble.domain.errors import Unauthenticated
    from vibe_ensemble.ops import tracing
    from vibe_ensemble.ops.startup import collect_from_here
    from vibe_ensemble.runtime import Runtime
    from vibe_ensemble.store.database import DatabaseInUse, Owner

    # A server: its log (stderr) has the server's level, so each tool call writes a `tool_call` line
    # (with its `trace_id` when tracing is on).
    command_logs(getattr(logging, settings.log_level.upper(), logging.INFO))

    async def main() -> None:
        runtime = Runtime(settings)
        try:
            await runtime.start(owner=Owner(process="mcp"))
        except DatabaseInUse as exc:  # another process owns the file: the way to share it is a server
            raise DatabaseInUse(f"{exc} {_way_through(exc.owner, settings)}", exc.owner) from None
        # resource changes, for subscriptions/listen and resources/subscribe
        bus = ListenedBus(lambda: runtime.services.ctx.hub.latest)
        notifier = ResourceNotifier(runtime.services, bus)
        # Tracing on (ops/tracing.py): each tool call is a span (a trace's root: no HTTP request
        # here), its database transactions and statements spans under it.
        runtime.db.tracer = tracer = tracing.start(settings)
        try:
            caller = await runtime.services.tokens.authenticate(token)
            profile = profile_of(caller.tool_profile or settings.tool_profile)
            server = build_mcp(settings, profile=profile, subscriptions=bus, tracer=tracer)
            await runtime.start_live()
            await notifier.start()
            collect_from_here()  # started: the collector, off while starting (cli.main), runs from here
            # The process acts as its token's holder: its refusals are its own, not audited.
            ended = asyncio.Event()
            with bind(CallContext(runtime.services, caller, audit_denials=False, ended=ended)):
                if not await _serve_while_usable(server, runtime.services, ended, settings.feed_keepalive_s):
                    raise Unauthenticated("the token was revoked or has expired while the MCP server ran")
        finally:
            await notifier.stop()
            tracing.stop()
            await runtime.stop()

    run(main, database=settings.effective_database_url)


def _way_through(owner: Owner | None, settings: Settings) -> str:
    """What a stdio server refused on a file another process owns can do instead, from what the owner
    lock records: go through the owning server at its MCP URL; serve the file when the owner is
    another stdio server (it has no URL); else, the owner's address unknown (an older release), go
    through it at the URL it printed at start — never a URL guessed from these settings."""
    from vibe_ensemble.ops.startup import command

    cli = command()
    if owner is not None and owner.mcp_url is not None:
        through = f"{cli} mcp --url {shlex.quote(owner.mcp_url)}"
        return f"Or go through that server instead: `{through}`, with the same token (docs/clients/stdio.md)"
    if owner is not None and owner.process == "mcp":
        return (
            f"Only a server shares the file: stop that one, run `{database_env(settings)}{cli} serve`, "
            f"and start each agent's `{cli} mcp --url` with the MCP URL serve prints (docs/clients/stdio.md)"
        )
    if owner is not None and owner.process in ("restore", "migrate"):
        return f"Start this one again once the {owner.process} has ended."
    return (
        f"If it is a server, go through it instead: `{cli} mcp --url` with the MCP URL it printed at "
        "start and the same token (docs/clients/stdio.md)"
    )


async def still_usable(services: Services, caller: Caller) -> bool:
    """Whether the caller's token is still neither revoked nor expired; True while the database
    cannot say (an outage: the calls themselves answer `database_unavailable` meanwhile, and the
    server must not end for it)."""
    from vibe_ensemble.domain.errors import VibeError

    try:
        return await services.tokens.still_usable(caller)
    except VibeError:
        return True


async def _serve_while_usable(
    server: MCPServer, services: Services, ended: asyncio.Event, every_s: float
) -> bool:
    """Serve stdio until the client leaves; True when the token stayed usable throughout. The token
    is read again every `every_s`, as open feeds do: once revoked or expired, `ended` is set, so every
    call is refused with `[unauthenticated]` (it was authenticated once, at start, and served on)."""
    import anyio

    from vibe_ensemble.api.mcp.context import bound

    call = bound()
    assert call is not None

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while await still_usable(services, call.caller):  # noqa: ASYNC110 - a database poll
                await anyio.sleep(every_s)
            ended.set()
            print(
                "error: the token was revoked or has expired: every call is now refused; "
                "start the MCP server again with a live token",
                file=sys.stderr,
                flush=True,
            )

        async def serve() -> None:
            await _run_stdio(server)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(serve)
    return not ended.is_set()


async def _run_stdio(server: MCPServer) -> None:
    """`server` on this process's stdio, as the SDK's `run_stdio_async`, except that when stdin closes
    the requests read before it are still answered (cli/inflight.py) before the server stops: the
    SDK's loop cancelled them, so `printf … | vibe-ensemble mcp` lost the answers in flight (a write
    done, its answer never written)."""
    import anyio
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage

    from vibe_ensemble.cli.inflight import DRAIN_S, Pending
    from vibe_ensemble.cli.stdin_lines import Lines, refusal

    PASS_ON_S = 10.0  # at most this long to hand one message to the stdout writer
    lowlevel = server._lowlevel_server  # the SDK's run_stdio_async is this, on the stdio streams
    pending = Pending()
    lines = Lines()
    async with stdio_server(stdin=lines) as (stdin, stdout):  # type: ignore[arg-type]  # (reads lines)
        to_server, server_in = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server_out, from_server = anyio.create_memory_object_stream[SessionMessage](0)

        async def outbound() -> None:
            async for item in from_server:
                item = _said_as_ours(item)
                # Out in full even when the server stops meanwhile (below): it is someone's answer.
                with anyio.move_on_after(PASS_ON_S, shield=True):
                    await stdout.send(item)
                pending.answered(item.message)

        async def inbound() -> None:
            async with to_server:
                async for item in stdin:
                    answer = refusal(item, lines.take())  # what the SDK would drop, answered here
                    if answer is not None:
                        await server_out.send(SessionMessage(answer))
                        continue
                    if not isinstance(item, SessionMessage):  # a blank line: nothing was asked
                        continue
                    pending.asked(item.message)
                    await to_server.send(item)
                with anyio.move_on_after(DRAIN_S):
                    await pending.wait()
                if pending.ids:
                    left = f"{len(pending.ids)} request(s) unanswered {DRAIN_S:g} s after stdin closed"
                    print(f"stopped with {left}", file=sys.stderr, flush=True)

        async with anyio.create_task_group() as group:
            group.start_soon(outbound)
            group.start_soon(inbound)
            # Ends once `inbound` closes `to_server` (stdin's end, what was asked answered), or on its own.
            await lowlevel.run(server_in, server_out, lowlevel.create_initialization_options())
            group.cancel_scope.cancel()  # every answer the server sent has been taken by `outbound`
        await stdout.aclose()  # the stdout writer ends once it has written what it was handed


def _said_as_ours(item: SessionMessage) -> SessionMessage:
    """The SDK's refusal of a 2026-era request's envelope (`params._meta` missing, a version it does
    not speak) said as /mcp says it (api/mcp/refusals.py), so both doors answer alike."""
    import mcp_types as types
    from mcp.shared.message import SessionMessage

    from vibe_ensemble.api.mcp.refusals import said_as_ours

    message = item.message
    if not isinstance(message, types.JSONRPCError):
        return item
    ours = said_as_ours(message.error.model_dump(mode="json", exclude_none=True))
    if ours is None:
        return item
    error = types.ErrorData(code=ours["code"], message=ours["message"], data=ours["data"])
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=message.id, error=error), item.metadata)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp_stdio)
