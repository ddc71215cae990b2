"""The live side of the event log: feeds that follow it, and waiting for mail.

Nothing here carries event data between processes. The event hub only says
"events up to id N are committed" (after a local commit, or from another replica
through the PostgreSQL bridge); followers then read the events table, the truth,
after their own positions: once per wake-up for all the feeds of a process
(`RecentEvents`), and each on its own when it is further behind. So a missed or
coalesced wake-up costs latency, never an event, and a slow follower delays only
itself.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
from collections.abc import Iterator, Sequence

import structlog

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.models import Event, Inbox
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.services.base import Service, ServiceContext
from vibe_ensemble.services.events import EventService
from vibe_ensemble.services.messages import MessageService
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import events as event_store

log = structlog.get_logger(__name__)

PAGE_SIZE = 100
MAX_EVENT_ID = 2**63 - 1  # ids are 64-bit
RECENT_CAPACITY = 1000
MAX_TYPES = 20
MAX_WAIT_S = 60.0
MAIL_EVENT = "message.sent"
# A follower re-reads at least this often even when the hub is silent (a safety net:
# the hub is told of every commit, so this only matters if a wake-up went missing).
SAFETY_INTERVAL_S = 30.0
_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z_]+)*(\.\*)?$")


def check_types(types: Sequence[str] | None) -> list[str] | None:
    """Event type filters: exact types (`message.sent`) or families (`issue.*`)."""
    if not types:
        return None
    if len(types) > MAX_TYPES:
        raise InvalidInput("types", f"at most {MAX_TYPES} event types")
    for t in types:
        if len(t) > 64 or not _TYPE.match(t):
            raise InvalidInput("types", f"{t[:64]!r} is not an event type like 'issue.claimed' or 'issue.*'")
    return list(dict.fromkeys(types))


def type_matches(event_type: str, patterns: Sequence[str]) -> bool:
    """The in-memory twin of the type filter of `store.events.after`."""
    return any(event_type.startswith(p[:-1]) if p.endswith(".*") else event_type == p for p in patterns)


class RecentEvents:
    """The newest events, read once per wake-up for all the feeds of this process.

    It holds every event with an id in (low, high], unfiltered, and at most about
    `capacity` of them. A feed whose position is inside that window is served
    from here, so a hundred subscribers cost one read per commit, not a hundred;
    a feed further behind (catching up) reads the table itself.
    """

    def __init__(self, ctx: ServiceContext, capacity: int = RECENT_CAPACITY) -> None:
        self._ctx = ctx
        self._capacity = capacity
        self._events: list[Event] = []
        self._ids: list[int] = []
        self._low: int | None = None
        self._high = 0
        self._lock = asyncio.Lock()

    async def prime(self) -> None:
        """Open the window at the newest event, so that feeds starting now are served from it."""
        if self._low is None:
            await self._refresh()

    async def after(self, cursor: int) -> tuple[list[Event], int] | None:
        """The events after `cursor` known now, and the id the answer is complete up to.

        None when `cursor` is older than the window.
        """
        if self._low is None or self._ctx.hub.latest > self._high:
            await self._refresh()
        assert self._low is not None
        if cursor < self._low:
            return None
        return self._events[bisect.bisect_right(self._ids, cursor) :], max(self._high, cursor)

    async def _refresh(self) -> None:
        async with self._lock:
            hub = self._ctx.hub
            if self._low is None:
                async with self._ctx.db.read() as conn:
                    self._low = self._high = await event_store.last_id(conn)
            while hub.latest > self._high:
                seen = hub.latest
                async with self._ctx.db.read() as conn:
                    items = await event_store.after(conn, self._high, limit=PAGE_SIZE)
                self._events += items
                self._ids += [e.id for e in items]
                full = len(items) == PAGE_SIZE
                self._high = items[-1].id if full else max(self._high, seen, items[-1].id if items else 0)
            if len(self._events) > 2 * self._capacity:
                cut = len(self._events) - self._capacity
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
        ctx: ServiceContext,
        recent: RecentEvents,
        *,
        after: int,
        project: tuple[int, str] | None,
        types: list[str] | None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._ctx = ctx
        self._recent = recent
        self._project = project
        self._types = types
        self._page_size = page_size
        self.last_id = after
        # Every event up to the cursor was handed out or did not match; it can run ahead
        # of last_id when the newest events are not for this subscriber.
        self._cursor = after
        self._stale = True
        self._from_table = True

    @property
    def closed(self) -> bool:
        """True when the server is shutting down: the feed ends, the client reconnects elsewhere."""
        return self._ctx.hub.closed

    async def next(self, timeout: float) -> list[Event]:  # noqa: ASYNC109
        """The next events in id order, waiting up to `timeout` seconds for some.

        An empty list means nothing arrived in time (a good moment for a
        keep-alive) or the feed is closed.
        """
        hub = self._ctx.hub
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not hub.closed:
            if self._stale:
                items = await self._read()
                if items:
                    return items
            remaining = deadline - loop.time()
            if remaining <= 0:
                # The safety net: after a quiet spell, look at the table itself even if
                # nobody said there was anything new.
                self._stale = self._from_table = True
                return []
            self._stale = await hub.wait_beyond(self._cursor, remaining)
        return []

    async def _read(self) -> list[Event]:
        if not self._from_table:
            recent = await self._recent.after(self._cursor)
            if recent is not None:
                return self._take([e for e in recent[0] if self._matches(e)], complete_to=recent[1])
        self._from_table = False
        # Every id up to `seen` was committed before this read began, so whatever the
        # read does not return up to there does not match this feed.
        seen = self._ctx.hub.latest
        async with self._ctx.db.read() as conn:
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
        self._stale = full or self._ctx.hub.latest > self._cursor
        return items

    def _matches(self, event: Event) -> bool:
        if self._project is not None and event.project != self._project[1]:
            return False
        return self._types is None or type_matches(event.type, self._types)


class MailDispatcher:
    """Wakes agents waiting for mail; one per process, however many agents wait.

    On each hub wake-up it reads the new `message.sent` events once, and wakes
    only the waiters named in their recipients. A waiter registers before it
    looks at its inbox, so no mail can slip between the look and the wait.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._waiters: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._cursor = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    @property
    def position(self) -> int:
        """The newest event id the dispatcher has looked at."""
        return self._cursor

    async def start(self) -> None:
        if self._task is None:
            async with self._ctx.db.read() as conn:
                self._cursor = await event_store.last_id(conn)
            self._task = asyncio.create_task(self._run(), name="vibe-mail-dispatcher")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        self._wake_all()

    @contextlib.contextmanager
    def register(self, project: str, agent: str) -> Iterator[asyncio.Event]:
        """A signal that is set whenever mail for `agent` of `project` may have arrived."""
        if not self.running:
            raise RuntimeError("the mail dispatcher is not running: start it with Runtime.start_live()")
        key = (project, agent)
        signal = asyncio.Event()
        self._waiters.setdefault(key, set()).add(signal)
        try:
            yield signal
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(signal)
                if not waiters:
                    del self._waiters[key]

    async def _run(self) -> None:
        hub = self._ctx.hub
        while not hub.closed:
            await hub.wait_beyond(self._cursor, SAFETY_INTERVAL_S)
            if hub.closed:
                break
            if not self._waiters:
                # Nobody waits: whoever registers next looks at its inbox first anyway.
                self._cursor = max(self._cursor, hub.latest)
                continue
            try:
                await self._dispatch()
            except Exception:
                log.exception("mail_dispatch_failed")
                await asyncio.sleep(1.0)
        self._wake_all()

    async def _dispatch(self) -> None:
        hub = self._ctx.hub
        while True:
            seen = hub.latest
            async with self._ctx.db.read() as conn:
                items = await event_store.after(conn, self._cursor, types=[MAIL_EVENT], limit=500)
            for event in items:
                for name in event.payload.get("recipients", []):
                    for signal in self._waiters.get((event.project or "", name), ()):
                        signal.set()
            if len(items) < 500:
                self._cursor = max(self._cursor, seen, items[-1].id if items else 0)
                return
            self._cursor = items[-1].id

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for signal in waiters:
                signal.set()


class LiveService(Service):
    def __init__(self, ctx: ServiceContext, events: EventService, messages: MessageService) -> None:
        super().__init__(ctx)
        self._events = events
        self._messages = messages
        self.mail = MailDispatcher(ctx)
        self.recent = RecentEvents(ctx)

    async def feed(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        types: Sequence[str] | None = None,
        after: int | None = None,
    ) -> Feed:
        """Follow the event log after `after` (None: from now on), within what the caller may read."""
        caller.require(Op.EVENT_READ)
        if after is not None and not 0 <= after <= MAX_EVENT_ID:
            raise InvalidInput("after", "must be 0 or an event id")
        wanted = check_types(types)
        project_ids = await self._events.scope(caller, project)
        scope = None
        if project_ids is not None:
            scope = (project_ids[0], caller.project_slug(project, self.ctx.default_project))
        await self.recent.prime()
        if after is None:
            after = await self._events.latest_id()
        return Feed(self.ctx, self.recent, after=after, project=scope, types=wanted)

    async def wait_for_messages(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        timeout_s: float = 30.0,
        since_id: int = 0,
        limit: int = 50,
        mark_read: bool = False,
    ) -> Inbox:
        """The caller's unread mail (after `since_id`) as soon as there is any, or empty after `timeout_s`."""
        caller.require(Op.MESSAGE_READ)
        if not 0 <= timeout_s <= MAX_WAIT_S:
            raise InvalidInput("timeout_s", f"must be between 0 and {MAX_WAIT_S:g} seconds")
        if not 0 <= since_id <= MAX_EVENT_ID:
            raise InvalidInput("since_id", "must be 0 or a message id")
        limit = rules.limit("limit", limit)
        name = caller.acting_agent(agent)
        async with self.ctx.db.read() as conn:
            proj = await self.project(conn, caller, project)
            await agent_store.get(conn, proj.id, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with self.mail.register(proj.slug, name) as signal:
            while True:
                signal.clear()
                inbox = await self._messages.fetch_inbox(
                    caller, project=proj.slug, agent=name, unread_only=True, since_id=since_id, limit=limit
                )
                remaining = deadline - loop.time()
                if inbox.items or remaining <= 0 or self.ctx.hub.closed:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await signal.wait()
        if inbox.items and mark_read:
            inbox = await self._messages.fetch_inbox(
                caller,
                project=proj.slug,
                agent=name,
                unread_only=True,
                since_id=since_id,
                limit=limit,
                mark_read=True,
            )
        return inbox
