"""MCP change notifications: committed events (from any replica) become resource-change messages."""

from __future__ import annotations

import asyncio

import structlog
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.subscriptions import ServerEvent

from vibe_ensemble.api.mcp.resources import resource_changes
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.events.feed import Feed
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)


class ResourceNotifier:
    """Follows the event log and publishes the `vibe://` URIs each event changed on a bus."""

    def __init__(self, services: Services, bus: SubscriptionBus) -> None:
        self.services = services
        self.bus = bus
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        feed = await self.services.live.feed(SYSTEM)
        self._task = asyncio.create_task(self._run(feed), name="vibe-mcp-notifier")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self, feed: Feed) -> None:
        while not feed.closed:
            try:
                events = await feed.next(60.0)
                changes: dict[ServerEvent, None] = {}
                for event in events:
                    changes.update(dict.fromkeys(resource_changes(event)))
                for change in changes:
                    await self.bus.publish(change)
            except Exception:
                log.exception("mcp_notifier_failed")
                await asyncio.sleep(1.0)
