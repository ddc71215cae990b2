"""Three real server processes on one PostgreSQL: mail wakes a waiter on another replica at once,
feeds on different replicas agree and survive a replica dying, duties run exactly once and move on
when their process dies. And SQLite refuses to be shared."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed

from ..support import ServerProcess, call, mcp_client, run_cli, start_server
from .live_support import latest_id, log_after, metric, rest, sse_frames, token, ws_connect

QUICK = {
    "VIBE_OFFLINE_AFTER_S": "1",
    "VIBE_SWEEP_INTERVAL_S": "0.2",
    "VIBE_LEADER_RETRY_S": "0.2",
    "VIBE_FEED_KEEPALIVE_S": "0.5",
}


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for _ in "abc":
            servers.append(start_server(tmp_path, database_url=postgres_url, extra_env=QUICK))
        # Only the first start, on an empty database, prints an admin token.
        assert servers[0].admin_token and not servers[1].admin_token
        for server in servers[1:]:
            server.admin_token = servers[0].admin_token
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_mail_and_feeds_cross_replicas_and_survive_one_dying(cluster: list[ServerProcess]) -> None:
    a, b, c = cluster
    admin = a.admin_token
    async with rest(a.url, admin) as api, asyncio.timeout(60):
        alice = await token(api, "worker", project="default", agent="alice")
        bob = await token(api, "worker", project="default", agent="bob")
        start = await latest_id(api)
        sse_ids: list[int] = []
        ws_ids: list[int] = []

        async def follow_sse() -> None:
            async with api.stream("GET", "/events/stream", params={"after": start}) as response:
                async for frame in sse_frames(response):
                    if frame.id is not None:
                        sse_ids.append(frame.id)

        async def follow_ws(server: ServerProcess, after: int) -> None:
            async with ws_connect(server.url, admin, after=after) as ws:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "event":
                        ws_ids.append(message["event"]["id"])

        sse_task = asyncio.create_task(follow_sse())  # on A
        ws_task = asyncio.create_task(follow_ws(c, start))  # on C

        # Mail sent on A wakes the agent waiting on B at once.
        async with mcp_client(a.mcp_url, alice) as on_a, mcp_client(b.mcp_url, bob) as on_b:
            await call(on_a, "register_agent", name="alice")
            await call(on_b, "register_agent", name="bob")
            waiting = asyncio.create_task(call(on_b, "wait_for_messages", timeout_s=20))
            await until(lambda: metric(b.url, "vibe_mail_waiters") == 1)
            sent = await call(on_a, "send_message", to=["bob"], subject="across", body="from A")
            sent_at = time.monotonic()
            inbox = await waiting
            delay = time.monotonic() - sent_at
            assert [i["message"]["id"] for i in inbox["items"]] == [sent["id"]]
            assert delay < 1, f"took {delay:.2f}s"

        # Events written on every replica; C dies while its subscriber is following.
        async def write(server: ServerProcess, label: str, count: int) -> None:
            async with rest(server.url, admin) as client:
                for i in range(count):
                    response = await client.post(
                        "/projects/default/issues", json={"title": f"{label} {i}", "agent": "alice"}
                    )
                    assert response.status_code == 201

        await asyncio.gather(write(a, "on A", 5), write(b, "on B", 5), write(c, "on C", 5))
        await until(lambda: len(ws_ids) >= 10)
        writers = asyncio.gather(write(a, "on A, C gone", 10), write(b, "on B, C gone", 10))
        c.kill()
        with pytest.raises(ConnectionClosed):
            await ws_task
        await writers
        latest = await latest_id(api)
        assert ws_ids[-1] < latest  # it really missed some

        # The WebSocket subscriber resumes on A from its last id and misses nothing.
        resumed = asyncio.create_task(follow_ws(a, ws_ids[-1]))
        # At least up to `latest`: the presence sweep may add events after it (alice and bob go
        # offline a second after their last call).
        await until(lambda: bool(ws_ids) and ws_ids[-1] >= latest and bool(sse_ids) and sse_ids[-1] >= latest)
        resumed.cancel()
        sse_task.cancel()

        # Every event once, in order, nothing skipped: each feed is a prefix of the log.
        truth = [e["id"] for e in await log_after(api, start)]
        assert sse_ids == truth[: len(sse_ids)]
        assert ws_ids == truth[: len(ws_ids)]


async def test_duties_run_once_and_survive_their_leader(cluster: list[ServerProcess]) -> None:
    admin = cluster[0].admin_token
    async with rest(cluster[0].url, admin) as api, asyncio.timeout(60):
        await until(lambda: leaders(cluster) == 1)
        leader = next(s for s in cluster if metric(s.url, "vibe_duty_leader") == 1)

        await goes_offline(api, "silent-1")
        leader.kill()
        alive = [s for s in cluster if s is not leader]
        await until(lambda: leaders(alive) == 1)

        async with rest(alive[0].url, admin) as api2:
            await api2.post("/projects/default/agents", json={"name": "steady"})
            steady = asyncio.create_task(keep_heartbeating(api2, "steady"))
            await goes_offline(api2, "silent-2")
            steady.cancel()
            agents = (await api2.get("/projects/default/agents", params={"status": "offline"})).json()
            assert "steady" not in {a["name"] for a in agents}


def leaders(servers: list[ServerProcess]) -> int:
    return sum(metric(s.url, "vibe_duty_leader") == 1 for s in servers)


async def goes_offline(api: httpx2.AsyncClient, name: str) -> None:
    """An agent that never heartbeats goes offline within the window, with exactly one event."""
    start = await latest_id(api)
    assert (await api.post("/projects/default/agents", json={"name": name})).status_code == 201
    registered = time.monotonic()

    async def offline() -> bool:
        agents = (await api.get("/projects/default/agents", params={"status": "offline"})).json()
        return name in {a["name"] for a in agents}

    while not await offline():
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - registered
    assert 0.9 <= elapsed < 1 + 0.2 + 1.5, f"offline after {elapsed:.2f}s"
    changes = [e for e in await log_after(api, start, types="agent.status") if e["payload"]["agent"] == name]
    assert [(e["payload"]["status"], e["actor"]) for e in changes] == [("offline", "system")]


async def keep_heartbeating(api: httpx2.AsyncClient, name: str) -> None:
    while True:
        await api.post(f"/projects/default/agents/{name}/heartbeat", json={})
        await asyncio.sleep(0.25)


async def until(condition: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def test_production_refuses_sqlite_with_several_replicas(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VIBE_PROFILE": "production",
        "VIBE_REPLICAS": "3",
        "VIBE_REQUEST_STATE_KEY": "k" * 40,
        "VIBE_DATA_DIR": str(tmp_path),
    }
    env.pop("VIBE_DATABASE_URL", None)
    done = run_cli([sys.executable, "-m", "vibe_ensemble.cli", "serve", "--migrate"], env=env)
    assert done.returncode == 2
    assert "SQLite cannot serve several replicas" in done.stderr
    assert not (tmp_path / "vibe.db").exists()  # refused before touching anything
