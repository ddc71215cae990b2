"""PostgreSQL: committed events are given their ids here, in rounds (store/events.order_pending).

A write on PostgreSQL commits its events with provisional ids, which no reader reads
(store/events.append): its commit takes no lock of the event log, so concurrent writers' commits
flush together. A round gives every committed event still waiting its id, in one short
statement under the event-order lock, and sends one NOTIFY, which every replica hears
(events/bridge.py). Readers thus find ids in id order, as before; an event reaches them a round
after its commit (a few milliseconds), no longer inside it.

- `committed()`: a write of this process committed events (`Service.write`). With the sequencer
  running (a server), a round runs `GATHER_S` later, shared by the writes of that moment; commits
  during a round make one more round after it, not one each. Without it (a command), a round runs
  at once.
- A round runs as the sequencer starts, and every `SWEEP_S` anyway: for the events of a process
  that died between its commit and its round, and of a replica of the previous release during an
  upgrade (migration 0017).
- `order_now()`: a round now, awaited: the events API, and whatever reads the newest id as a
  cursor (services/events.py), run one first, so a client that reads the log after its write was
  acknowledged finds the write's events.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Database

log = structlog.get_logger(__name__)

SWEEP_S = 1.0  # a round at least this often; also the wait after a failed round
GATHER_S = 0.002  # from a write's commit to its round: the writes of the same moment share it
LAST_ROUND_S = 2.0  # at shutdown


class EventSequencer:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._due = asyncio.Event()  # a write committed events since the last round began
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        """Run rounds from now on, the first at once (for what waits since this process, or another,
        stopped)."""
        if self._task is None:
            self._due.set()
            self._task = asyncio.create_task(self._run(), name="vibe-event-sequencer")

    async def stop(self) -> None:
        """Stop running rounds, after one last round of at most `LAST_ROUND_S` (best effort: a round
        elsewhere, or this process's next start, orders what it leaves; a database that does not
        answer does not hold the shutdown up)."""
        if self._task is None:
            return
        await stop_task(self._task)
        self._task = None
        try:
            async with asyncio.timeout(LAST_ROUND_S):
                await self.order_now()
        except Exception as exc:
            log.warning("event_order_failed", error=str(exc) or type(exc).__name__)

    async def committed(self) -> None:
        """Events were committed by this process: see them given their ids (never raises: the write
        they belong to has committed, and a later round gives them their ids)."""
        if self._task is not None:
            self._due.set()
            return
        try:
            await self.order_now()
        except Exception as exc:
            log.warning("event_order_failed", error=str(exc) or type(exc).__name__, retry="next round")

    async def order_now(self) -> int:
        """Run a round now: the newest id given (0 for none)."""
        async with self._db.write(one_statement=True) as conn:
            return await event_store.order_pending(conn)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_S):
                    await self._due.wait()
            if self._due.is_set():
                await asyncio.sleep(GATHER_S)  # the writes committing meanwhile share this round
            self._due.clear()
            try:
                await self.order_now()
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "event_order_failed", error=str(exc) or type(exc).__name__, retry_in_s=SWEEP_S
                    )
                    self._failing = True
                await asyncio.sleep(SWEEP_S)  # not a round per commit while the database refuses them
                continue
            if self._failing:
                log.info("event_order_resumed")
                self._failing = False
