"""The app factory: one FastAPI app with MCP, REST, the live feeds and the ops endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from vibe_ensemble import __version__
from vibe_ensemble.api import apidocs, auth, feeds, security
from vibe_ensemble.api import metrics as api_metrics
from vibe_ensemble.api.gate import CUT_OFF_AT_SHUTDOWN, Gate, ended_by_answer, stepped_aside
from vibe_ensemble.api.head import HeadAsGet
from vibe_ensemble.api.hosts import HostGuard
from vibe_ensemble.api.mcp import MCPEndpoint, build_mcp, transport_security, wire_json
from vibe_ensemble.api.mcp.notifier import ListenedBus, ResourceNotifier
from vibe_ensemble.api.mcp.profiles import PROFILES, Profile
from vibe_ensemble.api.rest import ROUTERS, errors
from vibe_ensemble.api.web import views
from vibe_ensemble.domain.errors import ShuttingDown
from vibe_ensemble.ops import metrics, startup
from vibe_ensemble.ops.logging import RequestLogMiddleware
from vibe_ensemble.ops.tracing import TracingMiddleware
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import faults, migrate

WRITE_PROBE_S = 2.0  # how long /readyz waits for its write, once writes were refused
# how long /readyz waits for the database to say its schema's revision: a probe answers within the
# kubelet's timeout (3 s in deployment/k8s), as 503, rather than hanging while the network is cut
READ_PROBE_S = 2.0

log = structlog.get_logger(__name__)
T = TypeVar("T")

_CUT_OFF: set[asyncio.Task[Any]] = set()  # probes' work past their bound, cleaning up (see `_within`)


async def _within(seconds: float, work: Awaitable[T]) -> T:
    """`work`'s answer, or TimeoutError once `seconds` have passed. The probe answers then, even when
    the work, cut off, takes longer to end: a rollback or a close on a connection whose database
    does not answer took /readyz to 4 s, past the kubelet's 3 s, while `asyncio.wait_for` waited for
    it. That cleanup goes on in the background."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.cancel()
    _CUT_OFF.add(task)
    task.add_done_callback(_ended)
    raise TimeoutError(f"no answer within {seconds:g} s")


def _ended(task: asyncio.Task[Any]) -> None:
    _CUT_OFF.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: its failure is the probe's answer already


if TYPE_CHECKING:
    from mcp.server import MCPServer
    from opentelemetry.trace import Tracer

    from vibe_ensemble.ops.config import Settings


class NamedRoute(Route):
    """A plain route that names itself in the scope as FastAPI's routes do (`scope["route"]`), so the
    request's log line and metrics carry its template, not `unmatched`, even when it is answered
    before the inner app is reached (a refused token on /mcp, the probes)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


class DrainMiddleware:
    """While the server drains before it stops (SIGTERM), every answer says `Connection: close`.

    Keep-alive clients then open their next request on a new connection, which the load balancer
    (told by /readyz) sends elsewhere; none is left on a connection the server is about to close.

    A request still being worked on when the server stops for good (uvicorn cancels what is open at
    the end of the shutdown's grace) is answered 503 `going_away`, saying it may not have been
    carried out, rather than with uvicorn's bare 500 and a traceback in the log: a dashboard page, a
    REST route (a tool call says so itself, as JSON-RPC: api/gate.py).
    """

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answering = False

        async def _send(message: Message) -> None:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
                if self.runtime.draining:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except asyncio.CancelledError:
            if answering:
                raise  # the answer is on its way: the web server closes the connection
            await auth.error_response(ShuttingDown(CUT_OFF_AT_SHUTDOWN))(scope, receive, _send)
            ended_by_answer()


class LiveSocketDoor:
    """The live feed's WebSocket goes through the two layers that act on it, then to its handler.

    A feed's socket stays open for hours, thousands of them at once, and every layer it passes keeps a
    suspended frame alive for as long as it is open. Of this app's layers only the request's log line
    and the allowed-hosts check act on a WebSocket; the others (HEAD, drain, metrics, tracing, security
    headers, body limit, CORS) are HTTP only, and FastAPI's own layers (server error, exception
    telemetry, body limit, exception handlers, exit stack) and router would only pass it on: `App`
    puts the door outside all of them. A layer that comes to act on WebSockets belongs in `socket` too.
    """

    def __init__(self, app: ASGIApp, route: feeds.SocketRoute, settings: Settings) -> None:
        self.app = app
        self.route = route
        self.socket = RequestLogMiddleware(HostGuard(self._serve, settings))

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it returns the next layer's, so no frame of its own stays suspended.
        if scope["type"] == "websocket":
            match, child = self.route.matches(scope)  # as the router would match it
            if match is Match.FULL:
                scope.update(child)
                scope["route"] = self.route  # the template the log line names, as `NamedRoute` does
                return self.socket(scope, receive, send)
        return self.app(scope, receive, send)

    def _serve(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return feeds.ws.serve(WebSocket(scope, receive, send))


class McpDoor:
    """A tool call (`POST /mcp`, most of the traffic) goes through this app's own layers and
    Starlette's last-resort 500, then straight to its endpoint.

    The app's own layers are those `add_middleware` installed, in their order (HEAD, the request's
    log line, tracing, drain, metrics, security headers, the host check, the body limit, CORS): the
    same classes with the same settings, so a tool call is logged, counted, guarded and limited as
    every other request is. FastAPI's other layers (exception telemetry, its own body limit, the
    exception handlers, the dependency exit stack) and the router would only pass it on: the MCP
    endpoint answers its own errors and needs no dependency. Skipping them saves 0.9% of a call's
    instructions (bench/instructions.py). Anything else (`GET`/`DELETE /mcp`, a method /mcp
    refuses) takes the app's usual way.
    """

    def __init__(self, app: ASGIApp, route: NamedRoute, layers: list[Middleware], *, debug: bool) -> None:
        self.app = app
        self.route = route
        door: ASGIApp = self._serve
        for cls, args, kwargs in reversed(layers):
            door = cls(door, *args, **kwargs)
        self.door = ServerErrorMiddleware(door, debug=debug)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it returns the next layer's, so no frame of its own is kept.
        # (a path that does not end in /mcp cannot match: REST's POSTs skip the route's regex)
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/mcp"):
            match, child = self.route.matches(scope)  # as the router would match it
            if match is Match.FULL:
                scope.update(child)  # names the route (`NamedRoute`) for the log line and metrics
                return self.door(scope, receive, send)
        return self.app(scope, receive, send)

    def _serve(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self.route.app(scope, receive, send)


class App(FastAPI):
    """FastAPI, with `McpDoor` and `LiveSocketDoor` outside every layer, FastAPI's own included
    (user middleware goes inside those). `mcp_route` and `live_socket` are set before the first
    request builds the stack."""

    mcp_route: NamedRoute | None = None
    live_socket: tuple[feeds.SocketRoute, Settings] | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.mcp_route is not None:
            stack = McpDoor(stack, self.mcp_route, self.user_middleware, debug=self.debug)
        if self.live_socket is None:
            return stack
        route, settings = self.live_socket
        return LiveSocketDoor(stack, route, settings)


def _mcp_server(settings: Settings, profile: Profile, bus: ListenedBus, tracer: Tracer | None) -> MCPServer:
    """The MCP server of one tool profile, with its session manager set up (stateless, JSON answers)."""
    server = build_mcp(settings, profile=profile, subscriptions=bus, tracer=tracer, pushes=False)
    server.streamable_http_app(  # makes the session manager; the Starlette app it returns is not used
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        transport_security=transport_security(),
        host=settings.host,
    )
    return server


def create_app(runtime: Runtime, *, tracer: Tracer | None = None) -> App:
    """The app; with a `tracer` (ops/tracing.start) every HTTP request, MCP tool call and database
    transaction and statement (store/traced.py) is a span."""
    settings = runtime.settings
    runtime.db.tracer = tracer
    # MCP change notifications, fed from the event log by `notifier` while anyone listens
    bus = ListenedBus(lambda: runtime.services.ctx.hub.latest)
    notifier = ResourceNotifier(runtime.services, bus)
    servers = {p: _mcp_server(settings, p, bus, tracer) for p in PROFILES}
    wire_json.install()  # the SDK's transport writes its answers with pydantic-core's encoder
    # /mcp hands a request straight to the SDK's transport: the SDK's own Starlette app around it
    # (error middleware, a router with this one route) would only repeat what this app does.
    mcp_apps = {p: server.session_manager.handle_request for p, server in servers.items()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for server in servers.values():
                await stack.enter_async_context(server.session_manager.run())
            await runtime.start_live()
            await notifier.start()
            runtime.start_duties()
            # What start-up made (modules, schemas, compiled statements: most of the heap) lives as long
            # as the process. Frozen, the collector's full passes skip it: one took 130-230 ms while
            # serving, every request waiting, and takes about a millisecond now (bench/stack.py).
            # The collector, off while `vibe-ensemble serve` started (cli.main), runs from here.
            startup.collect_from_here()
            try:
                yield
            finally:
                await runtime.stop_duties()
                await notifier.stop()
                await runtime.stop_live()

    app = App(
        title="Vibe Ensemble",
        version=__version__,
        description="Coordination server for teams of AI coding agents.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by `apidocs`, from the package (no CDN)
        redoc_url=None,
        responses=errors.RESPONSES,
        redirect_slashes=False,  # Starlette's would build an absolute Location from the request's Host
        # FastAPI's own OpenTelemetry spans, metrics and exception logs: off. Tracing is ours
        # (ops/tracing.py, `tracer`), a span per request already; FastAPI's would add a second one,
        # and its exception logs carry messages and tracebacks. Off, a request no longer asks for
        # the global providers (three environment lookups each: 1% of a tool call's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = runtime.services
    app.state.runtime = runtime
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(feeds.router)
    socket_route = feeds.SocketRoute()
    app.router.routes.append(socket_route)
    apidocs.install(app)
    views.install(app, settings)
    # One gate for the process's calls, MCP and REST alike (api/gate.py): a turn of the loop stays short.
    # Unset: 4 on SQLite (a call's work is on the loop), the pool's size on PostgreSQL.
    gate = Gate(settings.max_calls_at_once or (4 if runtime.db.is_sqlite else settings.db_pool_size))
    app.state.gate = gate  # the REST routes' (GatedRoute)
    runtime.db.writes_aside(stepped_aside)

    def _sample_gate() -> None:
        metrics.CALLS_WORKING.set(gate.inside)
        metrics.CALLS_QUEUED.set(gate.queued)

    metrics.add_sampler("calls", _sample_gate)
    endpoint = MCPEndpoint(runtime.services, mcp_apps, settings.tool_profile, gate)
    # First: the busiest route is matched before the REST, feed and dashboard routes are tried.
    mcp_route = NamedRoute("/mcp", endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    app.router.routes.insert(0, mcp_route)
    security.install(app, settings)
    # Outermost, so they see every answer, the body limit's 413 and 408 included (not a 500).
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(DrainMiddleware, runtime=runtime)
    app.add_middleware(RequestLogMiddleware)
    if tracer is not None:  # off, not even a middleware: tracing costs a request nothing
        app.add_middleware(TracingMiddleware, tracer=tracer)
    app.add_middleware(HeadAsGet)  # HEAD wherever GET
    app.mcp_route = mcp_route  # tool calls: through this app's own layers only (`McpDoor`)
    app.live_socket = (socket_route, settings)  # outside every layer: the feed's WebSockets

    _install_probes(app, runtime)
    api_metrics.install(app, runtime)

    return app


def _install_probes(app: FastAPI, runtime: Runtime) -> None:
    """/healthz (liveness: no I/O) and /readyz (readiness: the database and its migrations), both
    matched before the routers: FastAPI builds an included router's routes when a request first
    has to look past it, so a probe is answered without that (the first REST or dashboard request
    pays it instead)."""

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    warned_newer: list[str] = []  # the newer schema is logged once, not at every probe

    async def readyz(_: Request) -> JSONResponse:
        if runtime.draining:
            return JSONResponse({"status": "unavailable", "reason": "shutting down"}, 503)
        try:
            revision = await _within(READ_PROBE_S, migrate.current_revision(runtime.db, bound_s=READ_PROBE_S))
        except Exception:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        if faults.FAULTS.unwritable:
            # Writes were refused and none has succeeded since (reads may still work, as beside
            # another process's SQLite write lock): ready again once a write goes through, and
            # this probe is one, since a replica taken out of traffic receives none.
            try:
                await _within(WRITE_PROBE_S, runtime.db.probe_write())
            except Exception:
                return JSONResponse({"status": "unavailable", "database": "writes refused"}, 503)
        if revision is None or (revision != migrate.HEAD and revision in migrate.KNOWN):
            # older than this program: a new pod takes no traffic before the migration Job has run
            return JSONResponse({"status": "unavailable", "database": "migrations pending"}, 503)
        if migrate.is_newer(revision):
            # The next release's migration ran while this (already started) server serves: its
            # migrations keep the previous release working (expand, then contract a release later;
            # docs/deployment/production-operations.md), so it stays in traffic until replaced.
            if not warned_newer:
                warned_newer.append(revision)
                log.warning("schema_newer_than_program", revision=revision, newest_known=migrate.HEAD)
            return JSONResponse({"status": "ready", "database": "schema newer than this program"})
        if revision != migrate.HEAD:  # a revision no release of ours made
            return JSONResponse({"status": "unavailable", "database": "schema unknown to this program"}, 503)
        return JSONResponse({"status": "ready", "database": runtime.db.dialect})

    app.router.routes.insert(0, NamedRoute("/healthz", healthz, methods=["GET"], include_in_schema=False))
    app.router.routes.insert(1, NamedRoute("/readyz", readyz, methods=["GET"], include_in_schema=False))
