"""What the SSE and WebSocket feeds share: event ids from the client, the cut-off of slow clients."""

from __future__ import annotations

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
