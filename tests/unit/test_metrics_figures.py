"""/metrics' figures from the database (api/metrics.DatabaseFigures): their age is the counts' own,
and a read that does not come back in time holds no scrape up."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

from prometheus_client.metrics_core import Metric

from vibe_ensemble.api.metrics import DatabaseFigures
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services.stats import ServerStats

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Database:
    """Stands in for the services /metrics reads (the backup log, the counts): a unit test of the
    waiting, not of the reads (tests/e2e/test_metrics.py reads a real database behind a lock)."""

    def __init__(self, counted_s_ago: float) -> None:
        self.counted_s_ago = counted_s_ago
        self.stuck = False
        self.reads = 0
        self.unstuck = asyncio.Event()

    async def current(self) -> ServerStats:
        self.reads += 1
        if self.stuck:
            await self.unstuck.wait()
        return ServerStats({"open": 3}, {"idle": 1}, 2, 5, read_at=time.monotonic() - self.counted_s_ago)

    async def last_created(self) -> datetime:
        return NOW - timedelta(hours=2)


def figures(database: Database, wait_s: float) -> DatabaseFigures:
    services = SimpleNamespace(stats=database, backups=SimpleNamespace(last_created=database.last_created))
    services.backups.ctx = SimpleNamespace(clock=lambda: NOW)
    return DatabaseFigures(cast(Runtime, SimpleNamespace(services=services)), wait_s=wait_s)


async def finished(figures: DatabaseFigures) -> None:
    """Until the read under way has come back (the next scrape after it takes what it found)."""
    assert figures._reading is not None
    await asyncio.wait_for(figures._reading, 5)


def sample(gauges: list[Metric], name: str, **labels: str) -> float:
    return next(s.value for g in gauges for s in g.samples if s.name == name and s.labels == labels)


async def test_the_age_is_the_counts_own_when_they_come_from_a_cache() -> None:
    """Counts cached 8 s ago are 8 s old, whenever the scrape read them."""
    gauges = await figures(Database(counted_s_ago=8.0), wait_s=5).latest()
    assert 8.0 <= sample(gauges, "vibe_db_figures_age_seconds") < 9.0
    assert sample(gauges, "vibe_issues", status="open") == 3
    assert sample(gauges, "vibe_backup_age_seconds") == 7200


async def test_a_stuck_read_holds_no_scrape_up_and_the_next_takes_what_it_found() -> None:
    database = Database(counted_s_ago=0.5)
    stuck = figures(database, wait_s=0.2)
    first = await stuck.latest()
    assert sample(first, "vibe_issues", status="open") == 3
    database.stuck, database.counted_s_ago = True, 0.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = await stuck.latest()  # a read begins, and sticks
    again = await stuck.latest()  # a second scrape waits on the same read, starts no other
    assert loop.time() - started < 2 * 0.2 + 0.5
    assert database.reads == 2
    for gauges in (waiting, again):  # the counts last read, and how old they are
        assert sample(gauges, "vibe_issues", status="open") == 3
        assert sample(gauges, "vibe_db_figures_age_seconds") >= 0.5 + 0.2
        assert sample(gauges, "vibe_backup_age_seconds") == 7200
    database.unstuck.set()
    await finished(stuck)
    fresh = await stuck.latest()  # the read that was stuck came back: the next one begins, in time
    assert database.reads == 3
    assert sample(fresh, "vibe_db_figures_age_seconds") < 0.2


async def test_scrapes_after_the_first_wait_no_longer_than_the_reads_own_bound() -> None:
    """The wait is counted from the read's start: once a read is stuck past it, a scrape (a
    Prometheus' every 15 s, or a person's) answers at once, not after another full wait."""
    database = Database(counted_s_ago=0.0)
    database.stuck = True
    stuck = figures(database, wait_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stuck.latest()  # waits the whole bound for the read it started
    first = loop.time() - started
    started = loop.time()
    for _ in range(5):
        await stuck.latest()
    later = loop.time() - started
    assert first >= 0.3 and later < 0.3, (first, later)  # five more scrapes took less than one wait
    assert database.reads == 1
    database.unstuck.set()
    await finished(stuck)
    assert sample(await stuck.latest(), "vibe_issues", status="open") == 3


async def test_counts_never_read_are_left_out_and_their_age_is_infinite() -> None:
    database = Database(counted_s_ago=0.0)
    database.stuck = True
    never = figures(database, wait_s=0.05)
    gauges = await never.latest()
    assert sample(gauges, "vibe_db_figures_age_seconds") == float("inf")
    assert not [g for g in gauges if g.name == "vibe_issues"]
    database.unstuck.set()
    await finished(never)
    assert sample(await never.latest(), "vibe_issues", status="open") == 3
