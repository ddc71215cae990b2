"""In-process fan-out of "new events were committed".

The hub carries no event data: only the newest committed id. Whoever wakes up
reads the events table (the truth) after its own last id, so a missed or
coalesced wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class EventHub:
    def __init__(self) -> None:
        self._latest = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._closing = asyncio.Event()  # set once, when the hub closes
        self._followers = 0
        self._none_following = asyncio.Event()
        self._none_following.set()

    @property
    def latest(self) -> int:
        return self._latest

    @property
    def closed(self) -> bool:
        """True once the process is shutting down: waiters stop waiting and feeds end."""
        return self._closed

    def close(self) -> None:
        """Wake every waiter for good; from now on nobody waits."""
        self._closed = True
        self._closing.set()
        self._wake()

    async def until_closed(self) -> None:
        """Return once the hub is closed (the process shutting down)."""
        await self._closing.wait()

    def follow(self) -> Callable[[], None]:
        """Count one open feed until the returned callback runs (call it once, when the feed ends).

        At shutdown the server waits for the count to reach zero, so every feed says goodbye
        itself before the web server closes what is left.
        """
        self._followers += 1
        self._none_following.clear()
        return self._unfollow

    def _unfollow(self) -> None:
        self._followers -= 1
        if self._followers == 0:
            self._none_following.set()

    @property
    def followers(self) -> int:
        return self._followers

    async def feeds_ended(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until no feed is open (after `close()`, they end by themselves); False at the timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._none_following.wait()
        except TimeoutError:
            return False
        return True

    def publish(self, event_id: int) -> None:
        """Note that events up to `event_id` are committed, and wake every waiter if that is news.

        The same id often arrives twice (after the local commit, then from the PostgreSQL
        bridge); only the first wakes anyone.
        """
        if event_id > self._latest:
            self._latest = event_id
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, event_id: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until an event newer than `event_id` is published; False at the timeout.

        Returns at once when the hub is closed (check `closed`).
        """
        if self._latest > event_id or self._closed:
            return self._latest > event_id
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return self._latest > event_id
        return True
