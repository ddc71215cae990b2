"""MCP change notifications: committed events (from any replica) become resource-change messages.

Only while someone listens: with no listener on the bus (no `subscriptions/listen` stream, no stdio
`resources/subscribe`), the notifier reads nothing, so a busy server pays no read per commit for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ServerEvent

from vibe_ensemble.api.mcp.resources import resource_changes
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.events.feed import Feed
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)


class ListenedBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, which also knows whether anyone listens and since which event."""

    def __init__(self, latest: Callable[[], int]) -> None:
        super().__init__()
        self._latest = latest
        self.listeners = 0
        self.listened = asyncio.Event()
        self.since = 0  # the newest event id when the first of the current listeners arrived

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        if self.listeners == 0:
            self.since = self._latest()
            self.listened.set()
        self.listeners += 1
        gone = False

        def leave() -> None:
            nonlocal gone
            if not gone:
                gone = True
                self.listeners -= 1
                if self.listeners == 0:
                    self.listened.clear()
            unsubscribe()

        return leave


class ResourceNotifier:
    """Follows the event log while the bus has listeners, and publishes the `vibe://` URIs each
    event changed on it."""

    def __init__(self, services: Services, bus: ListenedBus) -> None:
        self.services = services
        self.bus = bus
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="vibe-mcp-notifier")

    async def _follow(self) -> None:
        bus = self.bus
        while not self.services.ctx.hub.closed:
            await bus.listened.wait()
            try:
                feed = await self.services.live.feed(SYSTEM, after=bus.since)
            except Exception:
                log.exception("mcp_notifier_failed")
                await asyncio.sleep(1.0)
                continue
            try:
                await self._run(feed)
            finally:
                feed.close()

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self, feed: Feed) -> None:
        while not feed.closed and self.bus.listeners:
            try:
                events = await feed.next(1.0)  # a second at most: then see whether anyone still listens
                changes: dict[ServerEvent, None] = {}
                for event in events:
                    changes.update(dict.fromkeys(resource_changes(event)))
                for change in changes:
                    await self.bus.publish(change)
            except Exception:
                log.exception("mcp_notifier_failed")
                await asyncio.sleep(1.0)
