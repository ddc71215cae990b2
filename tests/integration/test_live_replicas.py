"""Several processes on one PostgreSQL: commits reach every replica through LISTEN/NOTIFY (and a
lost connection costs latency, never an event); the duties run on exactly one, and move on when it goes.
Presence sweeps mark silent agents offline, on both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus
from vibe_ensemble.events import bridge
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import leader
from vibe_ensemble.store.leader import Leadership

from ..conftest import give_back_postgres_database, make_settings, take_postgres_database


async def until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not await _holds(condition):
            await asyncio.sleep(0.02)


async def _holds(condition: Callable[[], Any]) -> bool:
    value = condition()
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


@pytest.fixture
async def replicas(postgres_url: str, tmp_path: Path) -> AsyncIterator[list[Runtime]]:
    """Two runtimes (as two replicas would have) on one PostgreSQL database."""
    started: list[Runtime] = []
    try:
        for i in range(2):
            settings = make_settings(
                postgres_url,
                tmp_path / f"r{i}",
                offline_after_s=0.5,
                sweep_interval_s=0.1,
                leader_retry_s=0.1,
            )
            rt = Runtime(settings)
            await rt.start(apply_migrations=i == 0)
            started.append(rt)
        yield started
    finally:
        for rt in started:
            await rt.stop()


async def terminate(rt: Runtime, application_name: str) -> int:
    """Kill the server side of replicas' dedicated connections, as a network cut would."""
    return await _kill(
        rt,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = :name",
        name=application_name,
    )


async def terminate_lock_holder(rt: Runtime) -> int:
    return await _kill(
        rt,
        # Only this test's database: advisory locks are per database, and other tests (or other
        # servers) sharing this PostgreSQL hold the same key in theirs.
        "SELECT pg_terminate_backend(pid) FROM pg_locks "
        "WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = :key "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        key=leader.DUTY_LOCK_KEY,
    )


async def _kill(rt: Runtime, query: str, **params: Any) -> int:
    async with rt.db.engine.connect() as conn:
        killed = len((await conn.execute(sa.text(query), params)).all())
        await conn.commit()
    return killed


async def test_commits_reach_the_other_replica(replicas: list[Runtime], admin: Caller) -> None:
    a, b = replicas
    for rt in replicas:
        await rt.start_live()
    assert b.bridge is not None and await b.bridge.wait_connected(5)
    feed = await b.services.live.feed(admin)
    start = feed.last_id
    await a.services.agents.register(admin, name="w1")
    issue = await a.services.issues.create(admin, title="made on A", agent="w1")
    latest = await a.services.events.latest_id()
    # B's hub hears of A's commit (B wrote nothing itself)...
    await until(lambda: b.services.ctx.hub.latest == latest)
    # ...and B's subscribers read it from the table.
    events = []
    async with asyncio.timeout(5):
        while feed.last_id < latest:
            events.extend(await feed.next(5))
    assert [(e.type, e.actor) for e in events] == [
        ("agent.registered", "w1"),
        ("issue.created", "w1"),
        ("issue.ready", "w1"),
    ]
    assert events[1].payload["id"] == issue.id
    assert events[0].id > start


async def test_a_replica_cut_off_from_postgres_catches_up_and_loses_nothing(
    replicas: list[Runtime], admin: Caller
) -> None:
    a, b = replicas
    for rt in replicas:
        await rt.start_live()
    assert b.bridge is not None and await b.bridge.wait_connected(5)
    start = await a.services.events.latest_id()
    feed = await b.services.live.feed(admin, after=start)
    # Cut B's LISTEN connection (A's goes too; it does not matter), then write on A while B is away.
    assert await terminate(b, bridge.APP_NAME) >= 1
    await a.services.agents.register(admin, name="w1")
    for i in range(5):
        await a.services.issues.create(admin, title=f"while away {i}", agent="w1")
    latest = await a.services.events.latest_id()
    await until(lambda: b.bridge is not None and b.bridge.reconnects >= 1 and b.bridge.connected)
    got = []
    async with asyncio.timeout(5):
        while feed.last_id < latest:
            got.extend(await feed.next(5))
    assert [e.id for e in got] == [e.id for e in (await a.services.events.page(admin, after=start)).items]


async def test_a_replica_that_cannot_listen_polls_for_other_replicas_commits(
    replicas: list[Runtime], admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's pool reaches the database but its LISTEN connection cannot be made (here: refused at a
    port nothing listens on; in life, PostgreSQL out of connections): A's commits still reach B,
    by B asking for the newest id every second, and B's gauge says it is not listening."""
    from vibe_ensemble.ops import metrics

    a, b = replicas
    monkeypatch.setattr(b.db, "asyncpg_dsn", lambda: "postgresql://postgres@127.0.0.1:1/nothing")
    await a.start_live()
    await b.start_live()
    feed = await b.services.live.feed(admin)
    await a.services.agents.register(admin, name="w1")
    await a.services.issues.create(admin, title="made on A", agent="w1")
    latest = await a.services.events.latest_id()
    await until(lambda: b.services.ctx.hub.latest == latest, timeout=bridge.POLL_S * 5)
    assert b.bridge is not None and not b.bridge.connected and b.bridge.reconnects >= 1
    got = []
    async with asyncio.timeout(5):
        while feed.last_id < latest:
            got.extend(await feed.next(5))
    assert [e.type for e in got] == ["agent.registered", "issue.created", "issue.ready"]
    metrics.sample()
    assert metrics.EVENTS_LISTENING._value.get() == 0
    assert a.bridge is not None and await a.bridge.wait_connected(5)


async def test_one_leader_at_a_time_and_the_lock_moves_when_it_goes(
    postgres_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(postgres_url, tmp_path))
    await rt.start(apply_migrations=True)
    first, second = Leadership(rt.db), Leadership(rt.db)
    # Another server on the same PostgreSQL (another database) leads its own duties with the same key;
    # cutting our leader must not touch it.
    bystander_url = await take_postgres_database()
    bystander = await asyncpg.connect(
        sa.make_url(bystander_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        assert await bystander.fetchval("SELECT pg_try_advisory_lock($1)", leader.DUTY_LOCK_KEY)
        assert await first.check()
        assert not await second.check()
        assert await first.check()  # still held
        await first.release()
        assert await second.check()
        assert not await first.check()
        # The leader's connection dies (the process crashed, or the network went): the lock goes with it,
        # the other one takes it, and the old leader notices it no longer leads.
        assert await terminate_lock_holder(rt) == 1
        await until(first.check)
        assert not await second.check()
        assert not second.is_leader
        assert await bystander.fetchval("SELECT 1") == 1  # still connected, still leading its database
    finally:
        await bystander.close()
        await give_back_postgres_database(bystander_url)
        await first.release()
        await second.release()
        await rt.stop()


async def test_duties_run_once_across_replicas_and_survive_the_leader(
    replicas: list[Runtime], admin: Caller
) -> None:
    for rt in replicas:
        rt.start_duties()
    await until(lambda: sum(rt.is_leader for rt in replicas) == 1)
    chief = next(rt for rt in replicas if rt.is_leader)
    other = next(rt for rt in replicas if not rt.is_leader)

    await goes_offline(other, admin, "silent-1")
    await chief.stop_duties()  # the leader goes away
    await until(lambda: other.is_leader, what="the other replica to take the duties over")
    await goes_offline(other, admin, "silent-2")


async def goes_offline(rt: Runtime, admin: Caller, name: str) -> None:
    """An agent that never heartbeats turns offline within the window, with exactly one event."""
    services = rt.services
    start = await services.events.latest_id()
    # Timed from before the call: under load the call can take a while after stamping last_seen.
    registered = time.monotonic()
    await services.agents.register(admin, name=name)

    async def offline() -> bool:
        agents = await services.agents.list(admin, status=AgentStatus.OFFLINE)
        return any(a.name == name for a in agents)

    await until(offline, timeout=5)
    elapsed = time.monotonic() - registered
    window = rt.settings.offline_after_s + rt.settings.sweep_interval_s
    assert rt.settings.offline_after_s * 0.9 <= elapsed < window + 1.5
    events = [
        e
        for e in (await services.events.page(admin, after=start, types=["agent.status"])).items
        if e.payload["agent"] == name
    ]
    assert [(e.payload["status"], e.payload["reason"]) for e in events] == [("offline", "missed heartbeats")]


async def test_presence_sweep_on_either_database(database_url: str, tmp_path: Path, admin: Caller) -> None:
    rt = Runtime(make_settings(database_url, tmp_path, offline_after_s=0.5, sweep_interval_s=0.1))
    await rt.start(apply_migrations=True)
    try:
        rt.start_duties()
        await until(lambda: rt.is_leader)
        await goes_offline(rt, admin, "quiet")
        # A heartbeat brings it back.
        result = await rt.services.agents.heartbeat(admin, agent="quiet")
        assert result.agent.status == AgentStatus.IDLE
    finally:
        await rt.stop()
