"""PostgreSQL LISTEN/NOTIFY into the event hub: how a replica hears of the commits of every
replica, its own included.

Events are given their ids after their transactions commit, in rounds that each send
`NOTIFY vibe_events, '<newest id>'` (events/sequencer.py), which PostgreSQL delivers to every
listener when (and only if) the round commits. This bridge keeps one dedicated connection
LISTENing and tells the hub about each id it hears.

A notification carries no event data, and the events table stays the truth:
on every (re)connect the bridge publishes the current newest id, so whatever
was committed while it was away is read by the subscribers that follow the
hub. A lost notification, or a replica cut off from PostgreSQL for a while,
costs latency, never an event. While the LISTEN connection is down and the
pool still reaches the database (a LISTEN refused for want of connections, say),
the bridge asks for the newest id every `POLL_S` through `poll`, so other
replicas' commits still wake this one's waiters and feeds, a second late at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

from vibe_ensemble.events.hub import EventHub
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.store.events import NOTIFY_CHANNEL, newest_id_on_listener

log = structlog.get_logger(__name__)

APP_NAME = "vibe-ensemble events"  # how the LISTEN connection shows in pg_stat_activity
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
POLL_S = 1.0  # while not listening: how often the newest id is asked for instead


class PostgresBridge:
    def __init__(
        self,
        dsn: str,
        hub: EventHub,
        *,
        poll: Callable[[], Awaitable[int]] | None = None,
        health_interval_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._hub = hub
        self._poll = poll  # the newest event id, through the pool: asked while not listening
        self._poller: asyncio.Task[None] | None = None
        self._health_interval_s = health_interval_s
        self._connected = asyncio.Event()
        self._retry_now = asyncio.Event()  # set by `nudge`: end the backoff, reconnect at once
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="vibe-event-bridge")
        if self._poller is None and self._poll is not None:
            self._poller = asyncio.create_task(self._poll_while_deaf(), name="vibe-event-poll")

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the LISTEN connection is up (False at the timeout)."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def nudge(self) -> None:
        """The database answers (another connection to it was just made): if the LISTEN connection
        is down, stop waiting out the backoff and reconnect now. Without this a replica already
        serving again after a PostgreSQL restart stayed deaf to every commit (mail waiters, feeds)
        for up to MAX_BACKOFF_S more."""
        if not self._connected.is_set():
            self._retry_now.set()

    async def stop(self) -> None:
        await stop_task(self._poller)
        self._poller = None
        await stop_task(self._task)
        self._task = None

    async def _poll_while_deaf(self) -> None:
        """Every `POLL_S` while the LISTEN connection is down: publish the newest id (read through
        the pool; a database that does not answer at all is skipped, the next turn asks again)."""
        assert self._poll is not None
        while True:
            await asyncio.sleep(POLL_S)
            if self._connected.is_set():
                continue
            try:
                newest = await self._poll()
            except Exception as exc:  # unreachable too: nothing to read, nothing missed
                log.debug("event_poll_failed", error=str(exc) or type(exc).__name__)
                continue
            self._hub.publish(newest)

    async def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            self._retry_now.clear()  # a nudge from now on (even during this try) ends the next backoff
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event_bridge_lost", error=str(exc) or type(exc).__name__, retry_in_s=backoff)
            if self._connected.is_set():
                # It had been up: start the backoff afresh.
                backoff = MIN_BACKOFF_S
                self._connected.clear()
            delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto  # nosec B311
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            self.reconnects += 1

    async def _listen(self) -> None:
        """One LISTEN session: returns (or raises) when the connection is gone."""
        import asyncpg  # here: a SQLite server never starts the bridge, nor loads asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=10, server_settings={"application_name": APP_NAME})
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            # Listening first, then reading the newest id: nothing committed in between is missed.
            newest = await newest_id_on_listener(conn)
            self._hub.publish(newest)
            self._connected.set()
            log.info("event_bridge_listening", channel=NOTIFY_CHANNEL, newest=newest)
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._health_interval_s):
                        await lost.wait()
                if not lost.is_set():
                    # A half-open TCP connection delivers nothing and says nothing: ask.
                    await conn.fetchval("SELECT 1", timeout=self._health_interval_s)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            if not conn.is_closed():
                conn.terminate()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            event_id = int(str(payload))
        except ValueError:
            log.warning("event_bridge_bad_payload", payload=str(payload)[:100])
            return
        self._hub.publish(event_id)
