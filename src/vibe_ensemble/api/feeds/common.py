"""What the SSE and WebSocket feeds share: event ids from the client, the cut-off of slow clients."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog
from pydantic import TypeAdapter
from starlette.requests import HTTPConnection

from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.models import Event
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)

EVENT_JSON: TypeAdapter[Event] = TypeAdapter(Event)
CLOSE_TIMEOUT_S = 1.0
# A client cut off for falling behind gets this long to read what is buffered, and then the reason,
# before the connection is dropped.
CUTOFF_GRACE_S = 10.0


async def write_until_the_client_leaves(
    write: Coroutine[Any, Any, None], read_client: Coroutine[Any, Any, None]
) -> BaseException | None:
    """Run `write` in this task while `read_client` runs in a task of its own; when the reader ends
    first (the client left, or its read failed), it cancels the writing. One task and a
    done-callback, not two tasks (or an anyio task group, or `asyncio.wait`), for each of thousands
    of open feeds (bench/live_latency.py). Returns what the reader raised (None when it ended, or
    was stopped, without an error); a cancellation from outside still ends the caller."""
    this = asyncio.current_task()
    assert this is not None
    writing, left = True, False

    def client_done(_: asyncio.Task[None]) -> None:
        nonlocal left
        if writing:  # a reader that ends after the writing did cancels nothing
            left = True
            this.cancel()

    reader = asyncio.create_task(read_client)
    reader.add_done_callback(client_done)
    try:
        await write
    except asyncio.CancelledError:
        if not left or this.uncancel() > 0:  # cancelled from outside too: go on ending
            raise
    finally:
        writing = False
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return None if reader.cancelled() else reader.exception()


def settings_of(conn: HTTPConnection) -> Settings:
    settings: Settings = conn.app.state.runtime.settings
    return settings


def event_id(field: str, raw: str) -> int:
    """An event id sent as text (a header or a WebSocket query): 0 to `rules.MAX_ID`, ASCII digits."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
        raise InvalidInput(field, f"must be an event id (a whole number from 0 to {MAX_ID})")
    return int(raw)


async def within_the_log(
    services: Services, field: str, after: int | None, *, ordered: bool = False
) -> int | None:
    """`after` as a client sent it, refused when it is past the newest event: a cursor from another
    server's database (a failover, a restore) heard nothing, silently, until ids passed it.
    `ordered`: the caller read the log just now (`EventService.page`), after a round of its own."""
    if after is not None and after > (newest := await services.events.latest_id(order=not ordered)):
        raise InvalidInput(
            field,
            f"{after} is past the newest event ({newest}): a cursor from another server or database? "
            f"resume after {newest}, or from 0 for every event kept",
        )
    return after


def cut_off(transport: str, sent_id: int, send_timeout_s: float) -> None:
    """Count and log a client disconnected for falling behind."""
    metrics.FEED_DISCONNECTS.labels(transport, "slow_consumer").inc()
    log.warning(
        "feed_slow_consumer_disconnected", transport=transport, last_id=sent_id, send_timeout_s=send_timeout_s
    )


def slow_reason(sent_id: int) -> str:
    return f"slow consumer: the client fell behind and was disconnected; resume after event {sent_id}"
