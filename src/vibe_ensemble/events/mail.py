"""Waking agents that wait for mail: one dispatcher per process, however many agents wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import structlog

from vibe_ensemble.domain.events import EventType
from vibe_ensemble.events.hub import EventHub
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Database

log = structlog.get_logger(__name__)

MAIL_EVENT = EventType.MESSAGE_SENT.value
# An agent retired while it waits: woken, its wait ends at once (`[not_found] … is retired`), not
# when its timeout runs out.
RETIRED_EVENT = EventType.AGENT_RETIRED.value
WAKING_EVENTS = [MAIL_EVENT, RETIRED_EVENT]
# The dispatcher re-reads at least this often even when the hub is silent (a safety net:
# the hub is told of every commit, so this only matters if a wake-up went missing).
SAFETY_INTERVAL_S = 30.0


class MailDispatcher:
    """Wakes agents waiting for mail; one per process, however many agents wait.

    On each hub wake-up it reads the new `message.sent` (and `agent.retired`) events once, and
    wakes only the waiters named in their recipients (or the agent retired). A waiter registers before it
    looks at its inbox, so no mail can slip between the look and the wait.
    """

    def __init__(self, hub: EventHub, db: Database) -> None:
        self._hub = hub
        self._db = db
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
            async with self._db.read() as conn:
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
        hub = self._hub
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
        hub = self._hub
        while True:
            seen = hub.latest
            async with self._db.read() as conn:
                items = await event_store.after(conn, self._cursor, types=WAKING_EVENTS, limit=500)
            for event in items:
                retired = event.type == RETIRED_EVENT
                for name in [event.payload["agent"]] if retired else event.payload.get("recipients", []):
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
