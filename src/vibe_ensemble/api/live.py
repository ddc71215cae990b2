"""The live feed over HTTP: Server-Sent Events and WebSocket; waiting for mail; MCP change notifications.

Each connection follows the event log with its own `Feed` (services/live.py):
it reads pages after its own last id and waits on the event hub between them,
so a client that is slow, or gone, costs nobody else anything. A client that
cannot take the next chunk within `feed_send_timeout_s` has fallen behind: it
is disconnected with the reason (when it can still be told), and reconnects
from its last id without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import Response
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent
from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from vibe_ensemble.api.rest.deps import BearerDep, CallerDep, ServicesDep, get_caller
from vibe_ensemble.api.web import session as web_session
from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied, Unauthenticated, VibeError
from vibe_ensemble.domain.models import Event, Inbox
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import Services
from vibe_ensemble.services.live import Feed

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1")

EVENT_JSON: TypeAdapter[Event] = TypeAdapter(Event)
MAX_ID = 2**63 - 1
RETRY_MS = 2000  # SSE: how long a browser waits before it reconnects
AUTH_TIMEOUT_S = 10.0  # WebSocket: how long the first (auth) message may take
CLOSE_TIMEOUT_S = 1.0
# A client cut off for falling behind gets this long to read what is buffered, and then the reason,
# before the connection is dropped.
CUTOFF_GRACE_S = 10.0

# WebSocket close codes: 4000 + the HTTP status a request would have got.
WS_CLOSE = {
    "invalid_input": 4400,
    "unauthenticated": 4401,
    "permission_denied": 4403,
    "not_found": 4404,
    "rate_limited": 4429,
}
WS_SLOW = 4408
WS_GOING_AWAY = 1001
WS_INTERNAL_ERROR = 1011

TypesQuery = Annotated[
    list[str] | None,
    Query(max_length=20, description="Event types to follow; `issue.*` for a family. Default: all."),
]
ProjectQuery = Annotated[
    str | None, Query(max_length=64, description="Only this project's events (scoped tokens: their own).")
]


def _settings(conn: Request | WebSocket) -> Settings:
    settings: Settings = conn.app.state.runtime.settings
    return settings


def _bearer(headers: Any) -> str:
    scheme, _, token = str(headers.get("authorization", "")).partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# --- Server-Sent Events -----------------------------------------------------------


async def _feed_caller(request: Request, credentials: BearerDep) -> Caller:
    """A bearer token, or the dashboard's session cookie (a browser's EventSource cannot send headers)."""
    if credentials is None:
        found = web_session.from_request(request)
        if found is not None:
            caller = await web_session.authenticate(request.app.state.services, request, found)
            request.state.caller = caller
            return caller
    return await get_caller(request, credentials)


FeedCallerDep = Annotated[Caller, Depends(_feed_caller)]


@router.get(
    "/events/stream",
    tags=["events"],
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."}},
)
async def event_stream(
    request: Request,
    caller: FeedCallerDep,
    services: ServicesDep,
    project: ProjectQuery = None,
    types: TypesQuery = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Start after this event id (default: from now on).")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Sent by a reconnecting client; wins over `after`."),
    ] = None,
) -> Response:
    """The event log as Server-Sent Events: `id`, `event` (the type) and `data` (the event as JSON).

    Keep-alive comments arrive every `feed_keepalive_s`. Reconnect with `Last-Event-ID` (browsers do
    it by themselves) to resume exactly after the last event seen.
    """
    if last_event_id is not None:
        after = _event_id("Last-Event-ID", last_event_id.strip())
    feed = await services.live.feed(caller, project=project, types=types, after=after)
    token = _bearer(request.headers)
    session = None if token else web_session.from_request(request)

    async def still_valid() -> bool:
        if session is not None:
            return await web_session.still_valid(services, session)
        return await _still_valid(services, token)

    return EventStream(feed, _settings(request), still_valid)


async def _still_valid(services: Services, token: str) -> bool:
    """A revoked or expired token stops its open feeds at the next keep-alive."""
    try:
        await services.tokens.authenticate(token, throttle=False)  # the server's own check: not billed
    except Unauthenticated:
        return False
    except VibeError:
        return True  # rate limited: the token itself is still good
    return True


def _event_id(field: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise InvalidInput(field, "must be an event id (a whole number, 0 or more)")
    return int(raw)


def _frame(event: Event) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), EVENT_JSON.dump_json(event))


def _error_frame(code: str, message: str, last_id: int) -> bytes:
    data = json.dumps({"code": code, "message": message, "last_id": last_id})
    return f"event: error\ndata: {data}\n\n".encode()


class EventStream(Response):
    """A `text/event-stream` response that follows a feed until the client leaves or falls behind."""

    media_type = "text/event-stream"

    def __init__(self, feed: Feed, settings: Settings, still_valid: Callable[[], Awaitable[bool]]) -> None:
        self.feed = feed
        self.keepalive_s = settings.feed_keepalive_s
        self.send_timeout_s = settings.feed_send_timeout_s
        self.still_valid = still_valid
        self.sent_id = feed.last_id  # the last event written to the client
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.FEED_SUBSCRIBERS.labels("sse").inc()
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await self._stream(send)
                tg.cancel_scope.cancel()
        finally:
            metrics.FEED_SUBSCRIBERS.labels("sse").dec()

    async def _stream(self, send: Send) -> None:
        feed = self.feed
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        hello = f"retry: {RETRY_MS}\n: following events after {feed.last_id}\n\n".encode()
        if not await self._send(send, hello):
            return
        while True:
            try:
                events = await feed.next(self.keepalive_s)
            except Exception:
                log.exception("feed_failed", transport="sse", last_id=self.sent_id)
                message = (
                    f"the server could not read the event log; reconnect to resume after event {self.sent_id}"
                )
                await self._finish(send, _error_frame("internal", message, self.sent_id))
                return
            if feed.closed:
                message = f"the server is shutting down; reconnect to resume after event {self.sent_id}"
                await self._finish(send, _error_frame("going_away", message, self.sent_id))
                return
            if events:
                chunk = b"".join(_frame(e) for e in events)
            elif await self.still_valid():
                chunk = b": keep-alive\n\n"
            else:
                message = "the token was revoked or has expired"
                await self._finish(send, _error_frame("unauthenticated", message, self.sent_id))
                return
            if not await self._send(send, chunk):
                return
            if events:
                self.sent_id = events[-1].id

    async def _send(self, send: Send, chunk: bytes) -> bool:
        """Write a chunk; False when the client fell behind (and was cut off)."""
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except TimeoutError:
            # Nothing of the chunk was written (the write waits for room first), so the stream
            # is whole up to `sent_id`: end it there, with the reason once the client reads again.
            _cut_off("sse", self.sent_id, self.send_timeout_s)
            message = f"{_slow_reason(self.sent_id)} (Last-Event-ID: {self.sent_id})"
            await self._finish(send, _error_frame("slow_consumer", message, self.sent_id), CUTOFF_GRACE_S)
            return False
        return True

    async def _finish(self, send: Send, chunk: bytes, timeout: float = CLOSE_TIMEOUT_S) -> None:  # noqa: ASYNC109
        # Past the timeout, returning without finishing the body makes the server drop the connection.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": False})


def _cut_off(transport: str, sent_id: int, send_timeout_s: float) -> None:
    metrics.FEED_DISCONNECTS.labels(transport, "slow_consumer").inc()
    log.warning(
        "feed_slow_consumer_disconnected", transport=transport, last_id=sent_id, send_timeout_s=send_timeout_s
    )


def _slow_reason(sent_id: int) -> str:
    return f"slow consumer: the client fell behind and was disconnected; resume after event {sent_id}"


# --- WebSocket --------------------------------------------------------------------


@router.websocket("/events/ws")
async def event_socket(websocket: WebSocket) -> None:
    """The event log over a WebSocket; see docs/live.md for the messages.

    Authenticate with `Authorization: Bearer …`, or send `{"type": "auth", "token": "…"}` first.
    Query: `after` (resume after this id; default from now on), `project`, `types` (repeatable).
    """
    services: Services = websocket.app.state.services
    settings = _settings(websocket)
    await websocket.accept()
    metrics.FEED_SUBSCRIBERS.labels("ws").inc()
    try:
        token = _bearer(websocket.headers) or await _first_message_token(websocket)
        if token is None:
            return
        try:
            client = websocket.client
            caller = await services.tokens.authenticate(token, remote=client.host if client else "")
            try:
                feed = await services.live.feed(caller, **_ws_query(websocket))
            except PermissionDenied as exc:
                await services.audit.denied(caller, exc)
                raise
        except VibeError as exc:
            await _close(websocket, WS_CLOSE.get(exc.code, 4400), f"{exc.code}: {exc.message}")
            return
        await _WebSocketFeed(websocket, feed, settings, services, token).run()
    except WebSocketDisconnect:
        pass
    finally:
        metrics.FEED_SUBSCRIBERS.labels("ws").dec()


async def _first_message_token(websocket: WebSocket) -> str | None:
    try:
        with anyio.fail_after(AUTH_TIMEOUT_S):
            message = await websocket.receive_text()
        data = json.loads(message)
    except TimeoutError:
        await _close(websocket, 4401, "unauthenticated: send {'type': 'auth', 'token': ...} first")
        return None
    except (ValueError, KeyError):
        data = None
    if not isinstance(data, dict) or data.get("type") != "auth" or not isinstance(data.get("token"), str):
        await _close(websocket, 4401, "unauthenticated: the first message must be {'type': 'auth', ...}")
        return None
    token: str = data["token"]
    return token


def _ws_query(websocket: WebSocket) -> dict[str, Any]:
    params = websocket.query_params
    after_raw = params.get("after")
    after = None if after_raw is None else _event_id("after", after_raw)
    project = params.get("project")
    if project is not None and len(project) > 64:
        raise InvalidInput("project", "at most 64 characters")
    return {"after": after, "project": project, "types": params.getlist("types") or None}


async def _close(
    websocket: WebSocket,
    code: int,
    reason: str,
    timeout: float = CLOSE_TIMEOUT_S,  # noqa: ASYNC109
) -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    # A close reason is at most 123 bytes.
    reason = reason.encode()[:123].decode(errors="ignore")
    with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
        async with asyncio.timeout(timeout):
            await websocket.close(code, reason)


class _WebSocketFeed:
    """Writes a feed to a WebSocket while answering the client's pings."""

    def __init__(
        self, websocket: WebSocket, feed: Feed, settings: Settings, services: Services, token: str
    ) -> None:
        self.ws = websocket
        self.feed = feed
        self.keepalive_s = settings.feed_keepalive_s
        self.send_timeout_s = settings.feed_send_timeout_s
        self.services = services
        self.token = token
        self.sent_id = feed.last_id  # the last event sent to the client
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:

            async def read_client() -> None:
                await self._read_client()
                tg.cancel_scope.cancel()

            tg.start_soon(read_client)
            try:
                await self._write_events()
            except Exception:
                log.exception("feed_failed", transport="ws", last_id=self.sent_id)
                reason = f"server error; reconnect with after={self.sent_id}"
                await _close(self.ws, WS_INTERNAL_ERROR, reason)
            tg.cancel_scope.cancel()

    async def _read_client(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                data = json.loads(message.get("text") or "null")
            except ValueError:
                data = None
            is_ping = isinstance(data, dict) and data.get("type") == "ping"
            if is_ping and not await self._send({"type": "pong", "last_id": self.sent_id}):
                return

    async def _write_events(self) -> None:
        feed = self.feed
        if not await self._send({"type": "ready", "last_id": self.sent_id}):
            return
        while True:
            events = await feed.next(self.keepalive_s)
            if feed.closed:
                reason = f"server shutting down; reconnect with after={self.sent_id}"
                await _close(self.ws, WS_GOING_AWAY, reason)
                return
            if not events:
                if not await _still_valid(self.services, self.token):
                    await _close(self.ws, 4401, "unauthenticated: the token was revoked or has expired")
                    return
                if not await self._send({"type": "ping", "last_id": self.sent_id}):
                    return
            for event in events:
                message = {"type": "event", "event": EVENT_JSON.dump_python(event, mode="json")}
                if not await self._send(message):
                    return
                self.sent_id = event.id

    async def _send(self, message: dict[str, Any]) -> bool:
        """Send one message; False when the client is gone or fell behind (and was cut off)."""
        try:
            async with self._lock, asyncio.timeout(self.send_timeout_s):
                await self.ws.send_text(json.dumps(message))
        except TimeoutError:
            _cut_off("ws", self.sent_id, self.send_timeout_s)
            await _close(self.ws, WS_SLOW, _slow_reason(self.sent_id), CUTOFF_GRACE_S)
            return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False
        return True


# --- waiting for mail -------------------------------------------------------------


@router.get("/projects/{project}/agents/{name}/inbox/wait", tags=["messages"])
async def wait_for_messages(
    project: str,
    name: str,
    caller: CallerDep,
    services: ServicesDep,
    timeout_s: Annotated[float, Query(description="Give up after this many seconds (at most 60).")] = 30.0,
    since_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    mark_read: bool = False,
) -> Inbox:
    """The agent's unread mail as soon as there is any (from any replica), or empty at the timeout."""
    return await services.live.wait_for_messages(
        caller,
        project=project,
        agent=name,
        timeout_s=timeout_s,
        since_id=since_id,
        limit=limit,
        mark_read=mark_read,
    )


# --- MCP change notifications -----------------------------------------------------


def resource_changes(event: Event) -> list[ServerEvent]:
    """The MCP resource changes an event stands for (what `subscriptions/listen` clients hear).

    The resources are those of api/mcp_workspace.py: a project (with its board in brief),
    its board (issues, the active team, live leases), one issue, one knowledge entry.
    """
    if event.project is None:
        return []
    project = f"vibe://projects/{event.project}"
    family = event.type.split(".", 1)[0]
    board: list[ServerEvent] = [ResourceUpdated(f"{project}/board"), ResourceUpdated(project)]
    item = event.payload.get("id")
    if family == "issue" and isinstance(item, int):
        return [ResourceUpdated(f"{project}/issues/{item}"), *board]
    if family in ("agent", "reservation"):
        return board
    if family == "knowledge" and isinstance(item, int):
        return [ResourceUpdated(f"{project}/knowledge/{item}")]
    if event.type == "project.created":
        return [ResourcesListChanged(), ResourceUpdated("vibe://projects"), ResourceUpdated(project)]
    return []


class ResourceNotifier:
    """Turns committed events (from any replica) into MCP resource-change notifications on a bus."""

    def __init__(self, services: Services, bus: SubscriptionBus) -> None:
        self.services = services
        self.bus = bus
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        feed = await self.services.live.feed(SYSTEM)
        self._task = asyncio.create_task(self._run(feed), name="vibe-mcp-notifier")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self, feed: Feed) -> None:
        while not feed.closed:
            try:
                events = await feed.next(60.0)
                changes: dict[ServerEvent, None] = {}
                for event in events:
                    changes.update(dict.fromkeys(resource_changes(event)))
                for change in changes:
                    await self.bus.publish(change)
            except Exception:
                log.exception("mcp_notifier_failed")
                await asyncio.sleep(1.0)
