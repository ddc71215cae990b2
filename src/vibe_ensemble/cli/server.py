"""Serving in this process: the runtime and the app under uvicorn, stopping gracefully.

Imported when `serve` runs (not when the CLI loads), so other commands start without uvicorn,
FastAPI and the MCP SDK, and `serve --workers N` can choose the metrics mode first (cli/workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import socket
from collections.abc import Iterator
from types import FrameType

import structlog
import uvicorn
from rich.markup import escape

from vibe_ensemble.cli.clients import CLIENTS
from vibe_ensemble.cli.common import database_env, tell
from vibe_ensemble.ops import tracing
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.health import HealthListener, health_listener
from vibe_ensemble.ops.logging import unredacted_line
from vibe_ensemble.ops.startup import command, stop_asked
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store.database import Owner

log = structlog.get_logger(__name__)


async def prepare(settings: Settings, *, migrate: bool) -> None:
    """Before the workers start: migrations (when asked) and the first-start token, once."""
    runtime = Runtime(settings)
    await runtime.start(apply_migrations=migrate)
    try:
        secret = await runtime.bootstrap_admin_token()
        if secret is not None:
            announce(settings, secret)
    finally:
        await runtime.stop()


def announce(settings: Settings, secret: str) -> None:
    """The first-start banner: the admin token once, and the commands that give agents theirs, as
    they run from a shell without this server's settings (its database, its URL).

    With VIBE_LOG_JSON, one JSON line instead (`admin_token_created`, the token in
    `admin_token_secret`): a log pipeline reads stdout, and a banner would be a dozen lines it
    cannot parse. The redactor would cut the token, so the line is written past it
    (`unredacted_line`); it is the only one (docs/operations.md, docs/security.md)."""
    cli = database_env(settings) + command()
    if settings.log_json:
        line = unredacted_line(
            "admin_token_created",
            level="warning",
            admin_token_secret=secret,
            mcp_url=settings.mcp_url,
            message=(
                "first start: an admin token was created; it is shown this once. Make the admins' own "
                f"tokens with it (`{cli} token create --role admin`), then revoke it"
            ),
        )
        print(line, flush=True)
        return
    print(
        "\nFirst start: an admin token was created. It is shown this once; keep it safe, and give it\n"
        "to no agent (it can do everything):\n"
        f"\n  admin token: {secret}\n  MCP URL:     {settings.mcp_url}\n"
        "\nGive each agent its own token (printed once; keep it out of files you commit):\n"
        f"  {cli} token create --role worker --project {settings.default_project} --agent NAME\n"
        f"  {cli} token list\n"
        "\nOr, from the repository an agent works in, make its token and its client's config at once\n"
        f"({', '.join(list(CLIENTS)[:-1])} or {list(CLIENTS)[-1]}):\n"
        f"  {connect_command(settings)}\n",
        flush=True,
    )


def connect_command(settings: Settings) -> str:
    """`connect` for this server, runnable from any directory: with --url when clients would not
    find the server at the default URL, --project when its default project is not `default`."""
    defaults = Settings.model_construct()  # the built-in defaults, without this environment
    line = f"{database_env(settings)}{command()} connect claude-code --agent NAME"
    if settings.default_project != defaults.default_project:
        line += f" --project {shlex.quote(settings.default_project)}"
    if settings.mcp_url != defaults.mcp_url:
        line += f" --url {shlex.quote(settings.mcp_url)}"
    return line


async def serve_here(
    settings: Settings,
    *,
    migrate: bool,
    sockets: list[socket.socket] | None = None,
    first: bool = True,
    health: HealthListener | None = None,
) -> None:
    """Serve in this process (on `sockets` when a parent bound the port for several workers).

    `first`: this process prints the start line (and, serving alone, the first-start token).
    `health`: the liveness port, bound by `serve`; a worker of several binds its own.
    """
    if health is None:
        health = health_listener(settings, shared=True)  # a worker of several: they share the port
    try:
        await _serve(settings, migrate=migrate, sockets=sockets, first=first, health=health)
    finally:
        if health is not None:
            await health.stop()


async def _serve(
    settings: Settings,
    *,
    migrate: bool,
    sockets: list[socket.socket] | None,
    first: bool,
    health: HealthListener | None,
) -> None:
    from vibe_ensemble.api.app import create_app
    from vibe_ensemble.cli.http_protocol import head_limited_protocol
    from vibe_ensemble.cli.ws_protocol import FeedWebSocketProtocol

    runtime = Runtime(settings)
    # The port is bound (and, asked for 0, known): the owner lock of a SQLite file names this server
    # by its pid and the MCP URL it serves at, for whoever meets the lock.
    owner = Owner(process="serve", mcp_url=settings.mcp_url)
    await runtime.start(apply_migrations=migrate, owner=owner)
    try:
        asked = stop_asked()
        if asked is not None:  # while starting (migrating): stop before listening
            log.info("server_stopped", before="serving", signal=signal.Signals(asked).name)
            return
        tracer = tracing.start(settings)  # in each worker: the exporter's thread does not survive a fork
        secret = await runtime.bootstrap_admin_token() if first else None
        if secret is not None:
            announce(settings, secret)
        server = DrainingServer(
            runtime,
            uvicorn.Config(
                create_app(runtime, tracer=tracer),
                host=settings.host,
                port=settings.port,
                log_level="warning",
                log_config=None,  # uvicorn logs through ours, where tokens are redacted
                lifespan="on",
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=settings.trusted_proxies,
                limit_concurrency=settings.limit_concurrency,
                timeout_keep_alive=settings.keep_alive_s,  # longer than a proxy's idle timeout
                ws_max_size=settings.max_body_bytes,
                # httptools, with h11's bound on a request's head and a deadline for it
                # (cli/http_protocol.py)
                http=head_limited_protocol(settings.head_timeout_s),
                ws=FeedWebSocketProtocol,  # uvicorn's own, a lighter queue and gate (cli/ws_protocol.py)
                # Events are small JSON: compressing each one for each subscriber was most of the
                # CPU of a fan-out to 10,000 WebSockets (bench/live_latency.py --projects 100).
                ws_per_message_deflate=False,
                server_header=False,
                timeout_graceful_shutdown=settings.shutdown_grace_s,
            ),
        )
        if first:
            url = f"http://{settings.host}:{settings.port}"
            tell(
                settings,
                escape(f"Vibe Ensemble serving on {url}  (dashboard: /, MCP: {settings.mcp_url})"),
                "server_started",
                url=url,
                mcp_url=settings.mcp_url,
            )
        if health is not None:
            # Answered from here on, once migrations and start-up are done: a long migration holds
            # the loop, and must not look like a wedged process to a liveness probe.
            health.start()
        await server.serve(sockets=sockets)
    finally:
        tracing.stop()
        await runtime.stop()
    log.info("server_stopped")


FEEDS_GOODBYE_S = 1.0  # at most this long for the open feeds to end before the server stops
SETTLE_S = 0.1  # after the listener closes, time for requests already sent on open connections to be read


class DrainingServer(uvicorn.Server):
    """uvicorn's server that also ends the live feeds when told to stop.

    uvicorn waits for open responses before it shuts down, and an event stream never ends by itself.
    """

    def __init__(self, runtime: Runtime, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._loop = asyncio.get_running_loop()
        self._stopping: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal stops gracefully (after the drain, on SIGTERM); a second one at once."""
        if self._stopping is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._begin_stop, sig, frame)

    def _begin_stop(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping is None:
            self._stopping = self._loop.create_task(self._stop(sig, frame), name="vibe-stop")

    async def _stop(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._runtime
        drain = runtime.settings.shutdown_drain_s
        log.info(
            "server_stopping", signal=signal.Signals(sig).name, drain_s=drain if sig == signal.SIGTERM else 0
        )
        if sig == signal.SIGTERM and drain > 0:
            # Drain first: not ready, every answer says Connection: close; then stop.
            runtime.draining = True
        runtime.begin_shutdown()
        if runtime.draining:
            await asyncio.sleep(drain)
        # Each open feed says goodbye itself (1001 / `going_away`: reconnect elsewhere) before
        # uvicorn closes the connections that are left (a WebSocket would hear 1012 instead).
        await runtime.services.ctx.hub.feeds_ended(FEEDS_GOODBYE_S)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, let requests that already arrived be read, then stop as uvicorn does.

        uvicorn closes a connection whose request it has not read yet at once; with the request's
        bytes still unread, the kernel answers them with a reset ("did it happen?"). Read first,
        and such a request is answered (with `Connection: close`) like any other in flight.
        """
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await asyncio.sleep(SETTLE_S)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the server gracefully, and the process then exits normally (0).

        uvicorn's own version raises the signal again once the server has stopped, which kills the
        process before `Runtime.stop()` runs and makes a clean stop look like a crash (-15).
        """
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        asked = stop_asked()  # after `_serve` looked, before these handlers were set
        if asked is not None:
            self.handle_exit(asked, None)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
