"""A subscriber's cursor over the event log (`Feed`), and the newest events shared by all of them.

Nothing here carries event data between processes. The event hub only says
"events up to id N are committed" (after a local commit, or from another replica
through the PostgreSQL bridge); followers then read the events table, the truth,
after their own positions: once per wake-up for all the feeds of a process
(`RecentEvents`), and each on its own when it is further behind. So a missed or
coalesced wake-up costs latency, never an event, and a slow follower delays only
itself.

The hub wakes one task per process, `RecentEvents`' router: it reads each commit's events into
the shared window once, then rings the bell of each project they belong to (and the bell of
the feeds that follow every project). A feed waits on its own project's bell, so a commit wakes
the feeds it may concern, not all of them: 10,000 subscribers over 100 projects cost about a
hundred wake-ups per event, not 10,000. A feed looks at the window before it waits (a commit
between two waits is never missed), and a quiet feed whose project had no event stays served by
the window however far it moves on.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import difflib
import re
from collections.abc import Callable, Sequence

import structlog

from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.events import EVERY_READER, EventFamily, EventType
from vibe_ensemble.domain.models import Event
from vibe_ensemble.events.hub import EventHub
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Database

PAGE_SIZE = 100
RECENT_CAPACITY = 1000
TABLE_CHECK_S = 1.0  # the safety net reads the table's newest id at most this often per process
MAX_TYPES = 20
ROUTE_SAFETY_S = 30.0  # the router looks at the hub at least this often, even when nothing is published
_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*(\.\*)?$")

log = structlog.get_logger(__name__)


def check_types(types: Sequence[str] | None) -> list[str] | None:
    """Event type filters: exact types (`message.sent`) or families (`issue.*`)."""
    if not types:
        return None
    if len(types) > MAX_TYPES:
        raise InvalidInput("types", f"at most {MAX_TYPES} event types (got {len(types)})")
    for t in types:
        if len(t) > 64 or not _TYPE.match(t):
            raise InvalidInput("types", f"{t[:64]!r} is not an event type like 'issue.claimed' or 'issue.*'")
        _known(t)
    return list(dict.fromkeys(types))


_FAMILIES = [f"{f.value}.*" for f in EventFamily]
_TYPES = [t.value for t in EventType]


def _known(wanted: str) -> None:
    """Refuse a type or family the catalogue does not have: a feed filtered on a typo (`isue.*`,
    `issue.creatd`) would match nothing, and a live subscriber would wait for ever, never told."""
    if wanted in _TYPES or wanted in _FAMILIES:
        return
    choices = _FAMILIES if wanted.endswith(".*") else _TYPES
    near = difflib.get_close_matches(wanted, choices, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    kind = "family" if wanted.endswith(".*") else "type"
    raise InvalidInput(
        "types",
        f"{wanted!r} is not an event {kind} of this server{hint} (the families: {', '.join(_FAMILIES)}; "
        "the types: docs/live.md)",
    )


def type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    """The in-memory twin of the type filter of `store.events.after`."""
    return any(event_type.startswith(p[:-1]) if p.endswith(".*") else event_type == p for p in patterns)


class RecentEvents:
    """The newest events, read once per wake-up for all the feeds of this process.

    It holds every event with an id in (low, high], unfiltered, and at most about
    `capacity` of them. A feed whose position is inside that window is served
    from here, so a hundred subscribers cost one read per commit, not a hundred;
    so is a feed of one project further behind when no event of its project left the
    window past its position. Any other feed (catching up) reads the table itself.

    Its router (`start`) keeps the window up to date and rings the projects' bells
    (`wait`) for the events it takes in.
    """

    def __init__(self, hub: EventHub, db: Database, capacity: int = RECENT_CAPACITY) -> None:
        self._hub = hub
        self._db = db
        self._capacity = capacity
        self._events: list[Event] = []
        self._ids: list[int] = []
        self._floor: int | None = None  # the window's first low: older events were never in it
        self._low: int | None = None
        self._high = 0
        self._dropped: dict[str | None, int] = {}  # project -> the newest of its events that left the window
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._bells: dict[str | None, asyncio.Event] = {}  # project (None: every project) -> its bell
        self._router: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._router is not None and not self._router.done()

    async def start(self) -> None:
        """Open the window and start the router."""
        if self._router is None:
            await self.prime()
            self._router = asyncio.create_task(self._route(), name="vibe-feed-router")

    async def stop(self) -> None:
        await stop_task(self._router)
        self._router = None
        self._ring_all()

    async def wait(self, project: str | None, timeout: float) -> None:  # noqa: ASYNC109
        """Until the window takes in an event of `project` (None: of any project), or `timeout`."""
        bell = self._bells.get(project)
        if bell is None:
            bell = self._bells[project] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await bell.wait()

    @property
    def newest(self) -> int:
        """The id the window is complete up to."""
        return self._high

    async def _route(self) -> None:
        hub = self._hub
        while not hub.closed:
            await hub.wait_beyond(self._high, ROUTE_SAFETY_S)
            if hub.closed:
                break
            if not hub.followers and not self._lock.locked():
                # No feed is open: nothing to read the events for. The window starts again at the
                # newest id; a feed that opens later reads what came before it from the table.
                self._restart_at(hub.latest)
                continue
            try:
                await self._refresh()
            except Exception:
                # The feeds wait meanwhile: each looks at the table after its keep-alive interval.
                log.exception("feed_routing_failed")
                await asyncio.sleep(1.0)
        self._ring_all()

    def _restart_at(self, event_id: int) -> None:
        self._events.clear()
        self._ids.clear()
        self._dropped.clear()
        self._floor = self._low = self._high = max(self._high, event_id)

    def _ring(self, items: list[Event]) -> None:
        if any(e.type in EVERY_READER for e in items):
            self._ring_all()
            return
        for project in {None, *(e.project for e in items)}:
            bell = self._bells.pop(project, None)
            if bell is not None:
                bell.set()

    def _ring_all(self) -> None:
        bells, self._bells = self._bells, {}
        for bell in bells.values():
            bell.set()

    async def check_table(self) -> None:
        """The safety net for a wake-up that never came (a lost NOTIFY from another replica), for
        every feed of this process at once: the table's newest id, read at most once per
        `TABLE_CHECK_S`, is published to the hub when the hub did not know of it. A feed that has
        been quiet asks this instead of reading the table itself: 10,000 idle feeds cost one small
        read per second, not 10,000 reads per keep-alive."""
        now = asyncio.get_running_loop().time()
        if now - self._checked_at < TABLE_CHECK_S:
            return
        self._checked_at = now
        async with self._db.read() as conn:
            newest = await event_store.last_id(conn)
        self._hub.publish(newest)  # wakes the feeds only if it is news

    async def prime(self) -> None:
        """Open the window at the newest event, so that feeds starting now are served from it."""
        if self._low is None:
            await self._refresh()

    async def after(self, cursor: int, project: str | None = None) -> tuple[list[Event], int] | None:
        """The events after `cursor` known now, and the id the answer is complete up to; for a feed
        of one `project`, every event of that project after `cursor` is among them.

        None when `cursor` is older than the window and, for a project, an event of that project
        after `cursor` has left it (or may have: `cursor` is older than the window ever was).
        The router brings the window up to date; this reads nothing but the first time.
        """
        if self._low is None:
            await self._refresh()
        assert self._low is not None and self._floor is not None
        if cursor < self._low and (
            project is None
            or cursor < self._floor
            or self._dropped.get(project, 0) > cursor
            or self._dropped.get(None, 0) > cursor  # maybe a restore, which every feed gets
        ):
            return None
        return self._events[bisect.bisect_right(self._ids, cursor) :], max(self._high, cursor)

    async def _refresh(self) -> None:
        async with self._lock:
            hub = self._hub
            if self._low is None:
                async with self._db.read() as conn:
                    self._floor = self._low = self._high = await event_store.last_id(conn)
            while hub.latest > self._high:
                seen = hub.latest
                async with self._db.read() as conn:
                    items = await event_store.after(conn, self._high, limit=PAGE_SIZE)
                self._events += items
                self._ids += [e.id for e in items]
                full = len(items) == PAGE_SIZE
                self._high = items[-1].id if full else max(self._high, seen, items[-1].id if items else 0)
                self._ring(items)
            if len(self._events) > 2 * self._capacity:
                cut = len(self._events) - self._capacity
                for event in self._events[:cut]:  # in id order: each project keeps its newest
                    self._dropped[event.project] = event.id
                self._low = self._ids[cut - 1]
                del self._events[:cut], self._ids[:cut]


class Feed:
    """One subscriber's position in the event log, within what its caller may read.

    `last_id` is the last event handed out: a client that reconnects with it
    resumes exactly after it. A feed hands out at most `page_size` events at a
    time, so it never holds more than one page, however far behind its client is.
    """

    def __init__(
        self,
        hub: EventHub,
        db: Database,
        recent: RecentEvents,
        *,
        after: int,
        project: tuple[int, str] | None,
        types: list[str] | None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._hub = hub
        self._db = db
        self._recent = recent
        self._project = project
        self._bell = None if project is None else project[1]  # the project whose events wake the feed
        self._types = types
        self._page_size = page_size
        self.last_id = after
        # Every event up to the cursor was handed out or did not match; it can run ahead
        # of last_id when the newest events are not for this subscriber.
        self._cursor = after
        self._stale = True
        self._from_table = True
        self._on_close: list[Callable[[], None]] = [hub.follow()]

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the feed is closed (its connection ended)."""
        self._on_close.append(callback)

    def close(self) -> None:
        """The client is gone: run the close callbacks (once)."""
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()

    @property
    def closed(self) -> bool:
        """True when the server is shutting down: the feed ends, the client reconnects elsewhere."""
        return self._hub.closed

    async def next(self, timeout: float) -> list[Event]:  # noqa: ASYNC109
        """The next events in id order, waiting up to `timeout` seconds for some.

        An empty list means nothing arrived in time (a good moment for a
        keep-alive) or the feed is closed.
        """
        hub = self._hub
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not hub.closed:
            # What the window holds past the cursor is looked at before the feed waits: a bell rung
            # while it was not waiting is not missed.
            if self._stale or self._recent.newest > self._cursor:
                items = await self._read()
                if items:
                    return items
            remaining = deadline - loop.time()
            if remaining <= 0:
                # The safety net: after a quiet spell, look at the table even if nobody said
                # there was anything new (once for every feed of the process: `check_table`).
                await self._recent.check_table()
                self._stale = True
                return []
            await self._recent.wait(self._bell, remaining)
        return []

    async def _read(self) -> list[Event]:
        if not self._from_table:
            recent = await self._recent.after(self._cursor, self._bell)
            if recent is not None:
                return self._take([e for e in recent[0] if self._matches(e)], complete_to=recent[1])
        self._from_table = False
        # Every id up to `seen` was committed before this read began, so whatever the
        # read does not return up to there does not match this feed.
        seen = self._hub.latest
        async with self._db.read() as conn:
            items = await event_store.after(
                conn,
                self._cursor,
                project_ids=None if self._project is None else [self._project[0]],
                types=self._types,
                limit=self._page_size,
            )
        return self._take(items, complete_to=seen)

    def _take(self, items: list[Event], *, complete_to: int) -> list[Event]:
        """Hand out the first page of `items`: every match after the cursor up to `complete_to`."""
        full = len(items) >= self._page_size
        items = items[: self._page_size]
        if items:
            self.last_id = items[-1].id
        self._cursor = items[-1].id if full else max(self._cursor, complete_to, self.last_id)
        self._stale = full
        return items

    def _matches(self, event: Event) -> bool:
        if event.type in EVERY_READER:
            return True
        if self._project is not None and event.project != self._project[1]:
            return False
        return self._types is None or type_matches(event.type, self._types)
