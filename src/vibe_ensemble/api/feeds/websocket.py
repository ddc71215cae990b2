"""The event log over a WebSocket: authenticate (header, the dashboard's session cookie, or the first
message), then follow a feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import anyio
import structlog
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from vibe_ensemble.api import auth
from vibe_ensemble.api.feeds.common import (
    CLOSE_TIMEOUT_S,
    CUTOFF_GRACE_S,
    EVENT_JSON,
    cut_off,
    event_id,
    settings_of,
    slow_reason,
    within_the_log,
    write_until_the_client_leaves,
)
from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.domain.errors import DatabaseUnavailable, InvalidInput, PermissionDenied, VibeError
from vibe_ensemble.events.feed import Feed
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)

AUTH_TIMEOUT_S = 2.0  # how long the first (auth) message may take: an idle socket is not held
PING_INTERVAL_S = 1.0  # a client's pings are answered at most once per this interval
# Close codes: 4000 + the HTTP status a request would have got.
WS_CLOSE = {
    "invalid_input": 4400,
    "unauthenticated": 4401,
    "permission_denied": 4403,
    "not_found": 4404,
    "rate_limited": 4429,
    "too_many_open": 1008,  # policy violation: the credential holds its cap of open feeds
    "going_away": 1001,  # the server is shutting down: reconnect (to another replica)
    "database_unavailable": 1013,  # try again later: the database cannot be reached now
}
WS_SLOW = 4408
WS_GOING_AWAY = 1001
WS_INTERNAL_ERROR = 1011


async def serve(websocket: WebSocket) -> None:
    """Accept, authenticate, and follow the feed the query asks for until either side leaves."""
    services: Services = websocket.app.state.services
    settings = settings_of(websocket)
    await websocket.accept()
    metrics.FEED_SUBSCRIBERS.labels("ws").inc()
    try:
        try:
            token = auth.bearer_token(websocket.headers)
        except VibeError as exc:
            await _close(websocket, close_code(exc), f"{exc.code}: {exc.message}")
            return
        session = None if token is not None else sessions.from_request(websocket)
        if session is not None and not sessions.same_origin(websocket):
            # A page of another site opening a socket to us with the browser's cookie (had the
            # browser sent it): not the dashboard, refused before anything is read.
            await _close(websocket, 4403, "permission_denied: a session's socket must come from this site")
            return
        if token is None and session is None:
            token = await _first_message_token(websocket)
            if token is None:
                return
        try:
            # The dashboard's session cookie (its pages follow the log over a socket: a browser's
            # six connections to a host are not spent on them), else the token.
            presented = await auth.authenticate(services, websocket, session=session is not None, token=token)
            caller = presented.caller
            try:
                query = _ws_query(websocket)
                query["after"] = await within_the_log(services, "after", query["after"])
                feed = await services.live.feed(caller, **query)
            except PermissionDenied as exc:
                await auth.audit_denied(services, caller, exc)
                raise
        except VibeError as exc:
            await _close(websocket, close_code(exc), f"{exc.code}: {exc.message}")
            return
        # The request's headers have been read (the token, the session, the origin) and are not
        # read again while the socket stays open, for hours: emptied in place, so Starlette's
        # `websocket.headers` (which shares the list) lets go of them too (about 1.5 KB a socket).
        websocket.scope["headers"].clear()
        try:
            await _WebSocketFeed(websocket, feed, settings, services, presented).run()
        finally:
            feed.close()  # gives back the credential's feed slot
    except WebSocketDisconnect:
        pass
    finally:
        metrics.FEED_SUBSCRIBERS.labels("ws").dec()


def close_code(exc: VibeError) -> int:
    """The close code of a refusal: its own, else 4000 + its HTTP status for the client's fault, else
    1011 (the server's: reconnect)."""
    code = WS_CLOSE.get(exc.code)
    if code is not None:
        return code
    return 4000 + exc.http_status if 400 <= exc.http_status < 500 else WS_INTERNAL_ERROR


def _parsed(text: str) -> Any:
    """A client's message as JSON; None when it is not JSON or is nested past the parser's depth
    (`[[[…` raised RecursionError, which ended the socket with a traceback and no close frame)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


async def _first_message_token(websocket: WebSocket) -> str | None:
    try:
        with anyio.fail_after(AUTH_TIMEOUT_S):
            message = await websocket.receive_text()
        data = _parsed(message)
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
    after = None if after_raw is None else event_id("after", after_raw)
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

    __slots__ = (  # one for each open socket
        "_last_pong",
        "_lock",
        "feed",
        "keepalive_s",
        "presented",
        "send_timeout_s",
        "sent_id",
        "services",
        "ws",
    )

    def __init__(
        self,
        websocket: WebSocket,
        feed: Feed,
        settings: Settings,
        services: Services,
        presented: auth.Authenticated,
    ) -> None:
        self.ws = websocket
        self.feed = feed
        self.keepalive_s = settings.feed_keepalive_s
        self.send_timeout_s = settings.feed_send_timeout_s
        self._last_pong = -PING_INTERVAL_S
        self.services = services
        self.presented = presented
        self.sent_id = feed.last_id  # the last event sent to the client
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Write the feed while a task of its own reads the client (pings, its close), until either
        side ends (`write_until_the_client_leaves`)."""
        failed = await write_until_the_client_leaves(self._write_or_close(), self._read_client())
        if isinstance(failed, Exception) and not isinstance(failed, WebSocketDisconnect):
            raise failed

    async def _write_or_close(self) -> None:
        try:
            await self._write_events()
        except DatabaseUnavailable as exc:
            # The fault is logged once for the whole outage (store/faults.py), not per subscriber.
            wait = round(exc.retry_after)
            reason = f"database_unavailable: reconnect in {wait} s with after={self.sent_id}"
            await _close(self.ws, WS_CLOSE["database_unavailable"], reason)
        except Exception:
            log.exception("feed_failed", transport="ws", last_id=self.sent_id)
            reason = f"server error; reconnect with after={self.sent_id}"
            await _close(self.ws, WS_INTERNAL_ERROR, reason)

    async def _read_client(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = _parsed(message.get("text") or "null")
            is_ping = isinstance(data, dict) and data.get("type") == "ping"
            if not is_ping:
                continue
            # throttled: a flood of pings costs the server one pong per interval, the rest are dropped
            now = time.monotonic()
            if now - self._last_pong < PING_INTERVAL_S:
                continue
            self._last_pong = now
            if not await self._send({"type": "pong", "last_id": self.sent_id}):
                return

    async def _write_events(self) -> None:
        feed = self.feed
        if not await self._send({"type": "ready", "last_id": self.sent_id}):
            return
        checked = time.monotonic()  # when the credential was last read again
        while True:
            events = await feed.next(self.keepalive_s)
            if feed.closed:
                reason = f"server shutting down; reconnect with after={self.sent_id}"
                await _close(self.ws, WS_GOING_AWAY, reason)
                return
            # At every keep-alive, and at least once a keep-alive interval while events keep coming
            # (a busy project's socket outlived its token: the check ran on quiet spells only).
            now = time.monotonic()
            if not events or now - checked >= self.keepalive_s:
                checked = now
                if not await auth.still_valid(self.services, self.presented):
                    ended = "the token was revoked or has expired, or the session was logged out"
                    await _close(self.ws, 4401, f"unauthenticated: {ended}")
                    return
            if not events and not await self._send({"type": "ping", "last_id": self.sent_id}):
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
            cut_off("ws", self.sent_id, self.send_timeout_s)
            await _close(self.ws, WS_SLOW, slow_reason(self.sent_id), CUTOFF_GRACE_S)
            return False
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False
        return True
