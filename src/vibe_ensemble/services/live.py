"""Following the event log and waiting for mail: the authorised, validated entry points.

The machinery is in `events/`: `events.feed` (a subscriber's cursor, the shared recent
events) and `events.mail` (the dispatcher that wakes waiting recipients).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput, ShuttingDown, Unauthenticated
from vibe_ensemble.domain.models import Inbox
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.events.feed import Feed, RecentEvents, check_types
from vibe_ensemble.events.mail import MailDispatcher
from vibe_ensemble.services.base import Service, ServiceContext
from vibe_ensemble.services.events import EventService
from vibe_ensemble.services.messages import MessageService
from vibe_ensemble.services.tokens import TokenService

MAX_WAIT_S = 60.0


class LiveService(Service):
    def __init__(
        self, ctx: ServiceContext, events: EventService, messages: MessageService, tokens: TokenService
    ) -> None:
        super().__init__(ctx)
        self._events = events
        self._messages = messages
        self._tokens = tokens
        self.mail = MailDispatcher(ctx.hub, ctx.db)
        self.recent = RecentEvents(ctx.hub, ctx.db)

    async def feed(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        types: Sequence[str] | None = None,
        after: int | None = None,
    ) -> Feed:
        """Follow the event log after `after` (None: from now on), within what the caller may read.

        The feed counts against the credential's cap of open feeds until `feed.close()`, which the
        door calls when its connection ends."""
        caller.require(Op.EVENT_READ)
        if self.ctx.hub.closed:  # SIGTERM: the feeds' router has stopped; open feeds are saying goodbye
            raise ShuttingDown()
        if not self.recent.running:
            raise RuntimeError("the feeds' router is not running: start it with Runtime.start_live()")
        if after is not None and not 0 <= after <= rules.MAX_ID:
            raise InvalidInput("after", "must be 0 or an event id")
        wanted = check_types(types)
        project_ids = await self._events.scope(caller, project)
        scope = None
        if project_ids is not None:
            scope = (project_ids[0], caller.project_slug(project, self.ctx.default_project))
        slot = self.ctx.open_limits.take("feed", caller.credential_id)
        try:
            await self.recent.prime()
            if after is None:
                after = await self._events.latest_id()
        except BaseException:
            slot.release()
            raise
        feed = Feed(self.ctx.hub, self.ctx.db, self.recent, after=after, project=scope, types=wanted)
        feed.on_close(slot.release)
        return feed

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
        if not 0 <= since_id <= rules.MAX_ID:
            raise InvalidInput("since_id", "must be 0 or a message id")
        limit = rules.limit("limit", limit)
        name = caller.acting_agent(agent)
        async with self.snapshot() as conn:
            proj = await self.project(conn, caller, project)
            await self.acting_as(conn, proj.id, caller, name)
        deadline = asyncio.get_running_loop().time() + timeout_s
        present = allowed(caller.role, Op.AGENT_ACT)  # the agent waiting is present while it waits

        def waiting() -> None:
            if present:
                self.ctx.presence.heard(proj.id, name)

        with self.ctx.open_limits.hold("wait", caller.credential_id):  # the cap of held waits
            inbox = await self._wait(caller, proj.slug, name, deadline, since_id, limit, waiting)
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

    async def _wait(
        self,
        caller: Caller,
        project: str,
        name: str,
        deadline: float,
        since_id: int,
        limit: int,
        waiting: Callable[[], None],
    ) -> Inbox:
        """Fetch the unread mail until there is some, the deadline passes or the server stops.

        While it waits, `waiting` is told every `presence.interval_s` (the agent waiting is present).

        Woken after the wait began, the credential is read again before any mail is: a token revoked
        (or expired) while its call was held gets `Unauthenticated`, never the mail that woke it.
        """
        loop = asyncio.get_running_loop()
        # Shutting down (the dispatcher ends with the hub): answer at once with what is there.
        held = self.mail.register(project, name) if not self.ctx.hub.closed else None
        woken = False
        with held or contextlib.nullcontext(asyncio.Event()) as signal:
            while True:
                signal.clear()
                if woken and not await self._tokens.still_usable(caller):
                    raise Unauthenticated("the token was revoked or has expired while its call waited")
                inbox = await self._messages.fetch_inbox(
                    caller, project=project, agent=name, unread_only=True, since_id=since_id, limit=limit
                )
                remaining = deadline - loop.time()
                if inbox.items or remaining <= 0 or self.ctx.hub.closed:
                    break
                woken = await self._until(signal, deadline, waiting)
        return inbox

    async def _until(self, signal: asyncio.Event, deadline: float, waiting: Callable[[], None]) -> bool:
        """Wait for `signal` until `deadline` (loop time), telling `waiting` every `presence.interval_s`
        meanwhile; whether the signal came."""
        loop = asyncio.get_running_loop()
        tick = self.ctx.presence.interval_s
        while not signal.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, tick)):
                    await signal.wait()
            if not signal.is_set():
                waiting()
        return signal.is_set()
