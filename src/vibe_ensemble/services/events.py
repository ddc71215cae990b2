"""Reading the event log (the live feeds build on this)."""

from __future__ import annotations

import structlog

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import DatabaseUnavailable, InvalidInput, StorageFull
from vibe_ensemble.domain.models import Event, EventPage
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.events.feed import check_types
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import events as store

log = structlog.get_logger(__name__)


class EventService(Service):
    async def scope(self, caller: Caller, project: str | None) -> list[int] | None:
        """The project ids the caller may read events of (None: every project)."""
        caller.require(Op.EVENT_READ)
        if caller.project is None and project is None:
            return None
        async with self.snapshot() as conn:
            proj = await self.project(conn, caller, project)
        return [proj.id]

    async def page(
        self,
        caller: Caller,
        *,
        after: int = 0,
        project: str | None = None,
        types: list[str] | None = None,
        limit: int = 100,
        project_ids: list[int] | None = None,
    ) -> EventPage:
        """Events after `after`, oldest first. Pass `project_ids` from `scope` to skip the lookup."""
        limit = rules.limit("limit", limit, maximum=rules.MAX_EVENT_PAGE)
        types = check_types(types)  # at most MAX_TYPES, each a type or a family
        if after < 0:
            raise InvalidInput("after", "must be 0 or an event id")
        if project_ids is None:
            project_ids = await self.scope(caller, project)
        else:
            caller.require(Op.EVENT_READ)
        await self._order_committed()
        async with self.snapshot() as conn:
            items = await store.after(conn, after, project_ids=project_ids, types=types, limit=limit)
        return EventPage(items=items, last_id=items[-1].id if items else after)

    async def recent(
        self, caller: Caller, *, project: str | None = None, types: list[str] | None = None, limit: int = 20
    ) -> list[Event]:
        """The newest events the caller may read, newest first (the dashboard's recent activity)."""
        limit = rules.limit("limit", limit, maximum=rules.MAX_EVENT_PAGE)
        types = check_types(types)
        project_ids = await self.scope(caller, project)
        await self._order_committed()
        async with self.snapshot() as conn:
            return await store.recent(conn, project_ids=project_ids, types=types, limit=limit)

    async def _order_committed(self) -> None:
        """PostgreSQL: give every committed event its id before reading the log (events/sequencer.py),
        so a write acknowledged before this read has its events in it. A database that refuses the
        round (full, or the event-order lock held past the bound) does not refuse the read: what it
        reads is in id order all the same, and the events still waiting follow a round that succeeds."""
        if self.ctx.sequencer is None:
            return
        try:
            await self.ctx.sequencer.order_now()
        except (DatabaseUnavailable, StorageFull) as exc:
            log.info("event_order_skipped", error=exc.code)

    async def latest_id(self, *, order: bool = True) -> int:
        """The newest event id, every event committed before this call given its id first: a cursor
        from which whatever is committed later follows (feeds "from now on", the dashboard's pages).
        `order=False`: no round first, where one has just run (`page`) or runs anyway (the bridge's
        poll while it cannot listen, beside the sequencer's sweep each second)."""
        if order:
            await self._order_committed()
        async with self.snapshot() as conn:
            return await store.last_id(conn)
