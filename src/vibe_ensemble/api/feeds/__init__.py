"""The event log over HTTP: `/api/v1/events` (a page), `/events/stream` (SSE) and `/events/ws` (WebSocket).

Each connection follows the event log with its own `Feed` (events/feed.py): it reads
pages after its own last id and waits on the event hub between them, so a client that is
slow, or gone, costs nobody else anything. A client that cannot take the next chunk within
`feed_send_timeout_s` has fallen behind: it is disconnected with the reason (when it can
still be told), and reconnects from its last id without losing anything.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from starlette.routing import WebSocketRoute

from vibe_ensemble.api import auth
from vibe_ensemble.api.feeds import websocket as ws
from vibe_ensemble.api.feeds.common import event_id, settings_of, within_the_log
from vibe_ensemble.api.feeds.sse import EventStream
from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import BearerDep, CallerDep, ServicesDep
from vibe_ensemble.domain.models import EventPage
from vibe_ensemble.domain.rules import MAX_EVENT_PAGE, MAX_ID

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)

TypesQuery = Annotated[
    list[str] | None,
    Query(max_length=20, description="Event types to follow; `issue.*` for a family. Default: all."),
]
ProjectQuery = Annotated[
    str | None, Query(max_length=64, description="Only this project's events (scoped tokens: their own).")
]


@router.get("/events", tags=["events"])
async def list_events(
    caller: CallerDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Return events with a larger id.")] = 0,
    project: ProjectQuery = None,
    types: Annotated[
        list[str] | None, Query(max_length=20, description="Event types; `issue.*` for a family.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 100,
) -> EventPage:
    page = await services.events.page(caller, after=after, project=project, types=types, limit=limit)
    if not page.items and after > 0:  # nothing after it: past the newest event? (the feeds refuse it too)
        await within_the_log(services, "after", after, ordered=True)
    return page


async def _feed_caller(request: Request, _: BearerDep) -> auth.Authenticated:
    """A bearer token, or the dashboard's session cookie (a browser's EventSource cannot send headers)."""
    found = await auth.authenticate(request.app.state.services, request, session=True)
    request.state.caller = found.caller
    return found


FeedCallerDep = Annotated[auth.Authenticated, Depends(_feed_caller)]


@router.get(
    "/events/stream",
    tags=["events"],
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."}},
)
async def event_stream(
    request: Request,
    presented: FeedCallerDep,
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
    field = "after"
    if last_event_id is not None:
        field, after = "Last-Event-ID", event_id("Last-Event-ID", last_event_id.strip())
    after = await within_the_log(services, field, after)
    feed = await services.live.feed(presented.caller, project=project, types=types, after=after)
    return EventStream(feed, settings_of(request), lambda: auth.still_valid(services, presented))


class SocketRoute(WebSocketRoute):
    """`/api/v1/events/ws`: the event log over a WebSocket (`websocket.serve`; docs/live.md has the
    messages). Authenticate with `Authorization: Bearer …`, or send `{"type": "auth", "token": "…"}`
    first. Query: `after` (resume after this id; default from now on), `project`, `types` (repeatable).

    A plain Starlette route. A socket is held open for hours by each of thousands of subscribers:
    FastAPI's own WebSocket route would keep two exit stacks and its dependency-solving frames alive
    for each one (about 6 KB a subscriber), for a handler that takes no dependencies
    (bench/live_latency.py). The app's `LiveSocketDoor` (api/app.py) matches a socket with this route
    and hands it to its handler before the router is reached, naming the route in the scope for the
    request's log line; the route is in the router too, for its listing (api/access.py)."""

    def __init__(self) -> None:
        super().__init__("/api/v1/events/ws", ws.serve, name="event_socket")
