"""The event log as Server-Sent Events: one `EventStream` response per client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from vibe_ensemble.api.feeds.common import (
    CLOSE_TIMEOUT_S,
    CUTOFF_GRACE_S,
    EVENT_JSON,
    cut_off,
    slow_reason,
    write_until_the_client_leaves,
)
from vibe_ensemble.domain.errors import DatabaseUnavailable
from vibe_ensemble.domain.models import Event
from vibe_ensemble.events.feed import Feed
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings

log = structlog.get_logger(__name__)

RETRY_MS = 2000  # how long a browser waits before it reconnects


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
        """Stream while a task of its own waits for the client to leave, which then ends the
        streaming (`write_until_the_client_leaves`)."""

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        metrics.FEED_SUBSCRIBERS.labels("sse").inc()
        try:
            failed = await write_until_the_client_leaves(self._stream(send), watch_disconnect())
        finally:
            self.feed.close()  # gives back the credential's feed slot
            metrics.FEED_SUBSCRIBERS.labels("sse").dec()
        if failed is not None:
            raise failed

    async def _stream(self, send: Send) -> None:
        feed = self.feed
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        hello = f"retry: {RETRY_MS}\n: following events after {feed.last_id}\n\n".encode()
        if not await self._send(send, hello):
            return
        checked = time.monotonic()  # when the credential was last read again
        while True:
            try:
                events = await feed.next(self.keepalive_s)
            except DatabaseUnavailable as exc:
                # The fault is logged once for the whole outage (store/faults.py), not per subscriber.
                message = (
                    f"the database cannot be reached; reconnect in {round(exc.retry_after)} s to resume "
                    f"after event {self.sent_id}"
                )
                await self._finish(send, _error_frame("database_unavailable", message, self.sent_id))
                return
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
            # The credential is read again at every keep-alive, and at least once a keep-alive
            # interval while events keep coming: a busy project's feed went on for ever after its
            # token was revoked (or its session ended), the check ran on quiet spells only.
            now = time.monotonic()
            if not events or now - checked >= self.keepalive_s:
                checked = now
                if not await self.still_valid():
                    message = "the token was revoked or has expired, or the session was logged out"
                    await self._finish(send, _error_frame("unauthenticated", message, self.sent_id))
                    return
            chunk = b"".join(_frame(e) for e in events) if events else b": keep-alive\n\n"
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
            cut_off("sse", self.sent_id, self.send_timeout_s)
            message = f"{slow_reason(self.sent_id)} (Last-Event-ID: {self.sent_id})"
            await self._finish(send, _error_frame("slow_consumer", message, self.sent_id), CUTOFF_GRACE_S)
            return False
        return True

    async def _finish(self, send: Send, chunk: bytes, timeout: float = CLOSE_TIMEOUT_S) -> None:  # noqa: ASYNC109
        # Past the timeout, returning without finishing the body makes the server drop the connection.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
