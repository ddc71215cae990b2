"""How long the dashboard's board and "Needs attention" take to build for a big project.

    python bench/dashboard.py                      # a new SQLite file in a temporary folder
    python bench/dashboard.py --database-url postgresql+asyncpg://…/empty_db   # written to!

Seeds one project with 10,000 issues (2,000 dependency edges, 3,000 comments), 200 agents (a third
of them silent), 100,000 messages (one in ten asking for an acknowledgement), 400 leases and 20,000
events — bulk inserts straight into the tables, so seeding is quick — and then times, in this
process, over the application itself (ASGI, no network):

- `GET /fragments/board` and `GET /fragments/attention`: the whole request (authentication, the
  services, the templates) as the browser's live refresh makes it;
- `GET /`: the whole board page (board, attention and the frame);
- the services alone: `dashboard.board` (what the page shows), `attention.overview`, and for
  comparison `briefings.board` (REST's and MCP's board: up to 200 issues per status).

With `--overseer`, it times the overseer's pages instead (leases, mail threads and a thread, an
agent, the dependency graph, knowledge and mail search — words every message holds, one message in
a thousand holds, none holds — trends: their live fragments). `--only TEXT` times only the cases
whose name holds TEXT; `--messages N` seeds N messages instead of 100,000.

Figures are printed (wall-clock median and 95th percentile of `--rounds` runs after a warm-up,
and the median CPU time), never asserted. The target in issue 13 is < 100 ms for board and attention.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa

from vibe_ensemble.api.app import create_app
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import tables as t

ISSUES, AGENTS, MESSAGES = 10_000, 200, 100_000
EDGES, COMMENTS, LEASES, EVENTS = 2_000, 3_000, 400, 20_000
STATUSES = ["open"] * 4 + ["in_progress", "blocked", "review"] + ["done"] * 3 + ["closed"]


async def seed(runtime: Runtime, project_id: int) -> None:
    rnd = random.Random(13)  # nosec B311 - test data, not security
    now = datetime.now(UTC)
    async with runtime.db.write() as conn:
        await conn.execute(
            t.agents.insert(),
            [
                {
                    "project_id": project_id,
                    "name": f"agent-{i:03d}",
                    "role": "worker",
                    "status": "offline" if i % 3 == 0 else "working",
                    "capabilities": [],
                    "activity": f"working on item {i}",
                    "registered_at": now - timedelta(days=1),
                    "last_seen": now - timedelta(hours=1) if i % 3 == 0 else now,
                }
                for i in range(AGENTS)
            ],
        )
        agent_ids = [r.id for r in await conn.execute(sa.select(t.agents.c.id).order_by(t.agents.c.id))]
        rows = []
        for i in range(ISSUES):
            status = STATUSES[i % len(STATUSES)]
            assigned = status in ("in_progress", "blocked", "review", "done", "closed")
            rows.append(
                {
                    "project_id": project_id,
                    "title": f"Issue number {i} about subsystem {i % 37}",
                    "body": "Body text " * 20,
                    "status": status,
                    "priority": f"p{i % 4}",
                    "labels": [f"area-{i % 9}"],
                    "assignee_id": agent_ids[i % AGENTS] if assigned else None,
                    "version": 1,
                    "created_at": now - timedelta(minutes=ISSUES - i),
                    "updated_at": now - timedelta(minutes=(ISSUES - i) // 2),
                    "closed_at": now - timedelta(minutes=(ISSUES - i) // 2)
                    if status in ("done", "closed")
                    else None,
                }
            )
        for start in range(0, ISSUES, 1000):
            await conn.execute(t.issues.insert(), rows[start : start + 1000])
        issue_ids = [r.id for r in await conn.execute(sa.select(t.issues.c.id).order_by(t.issues.c.id))]
        edges = {(rnd.randrange(1, ISSUES), 0) for _ in range(EDGES)}
        await conn.execute(
            t.issue_dependencies.insert(),
            [{"issue_id": issue_ids[a], "depends_on_id": issue_ids[rnd.randrange(0, a)]} for a, _ in edges],
        )
        await conn.execute(
            t.comments.insert(),
            [
                {
                    "issue_id": rnd.choice(issue_ids),
                    "author": "agent-001",
                    "body": "Waiting on a review.",
                    "created_at": now,
                }
                for _ in range(COMMENTS)
            ],
        )
        for start in range(0, MESSAGES, 5000):
            batch = [
                {
                    "project_id": project_id,
                    "sender": f"agent-{(start + i) % AGENTS:03d}",
                    "subject": f"Message {start + i}",
                    "body": "Hello " * 29 + ("deadlock" if (start + i) % 1000 == 7 else "there"),
                    "thread_id": f"t-{(start + i) // 4}",
                    "importance": "normal",
                    "ack_required": (start + i) % 10 == 0,
                    "broadcast": False,
                    "created_at": now - timedelta(seconds=MESSAGES - start - i),
                }
                for i in range(min(5000, MESSAGES - start))
            ]
            ids = [r.id for r in await conn.execute(t.messages.insert().returning(t.messages.c.id), batch)]
            await conn.execute(
                t.message_recipients.insert(),
                [
                    {
                        "message_id": m,
                        "agent_id": agent_ids[(m * 7) % AGENTS],
                        "read_at": now if m % 2 else None,
                        "acked_at": None if m % 20 == 1 else now,
                    }
                    for m in ids
                ],
            )
        await conn.execute(
            t.reservations.insert(),
            [
                {
                    "project_id": project_id,
                    "agent_id": agent_ids[i % AGENTS],
                    "pattern": f"src/module_{i}/**",
                    "exclusive": True,
                    "reason": "",
                    "created_at": now,
                    "expires_at": now + timedelta(seconds=60 + 10 * i),
                }
                for i in range(LEASES)
            ],
        )
        for start in range(0, EVENTS, 5000):
            await conn.execute(
                t.events.insert(),
                [
                    {
                        "time": now - timedelta(seconds=EVENTS - start - i),
                        "project_id": project_id,
                        "type": "reservation.refused" if (start + i) % 500 == 0 else "issue.updated",
                        "actor": "agent-002",
                        "payload": {
                            "agent": "agent-002",
                            "paths": ["src/x.py"],
                            "source": "strict",
                            "conflicts": [{"holder": "agent-001", "path": "src/x.py"}],
                            "id": 1,
                        },
                    }
                    for i in range(5000)
                ],
            )


async def timed(rounds: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """Wall-clock median and 95th percentile, and the median CPU time of this process (threads
    included: SQLite runs in the driver's thread), in ms. On a busy machine the CPU time is the
    steadier figure: it leaves out the time spent waiting for a core."""
    for _ in range(3):
        await fn()
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        await fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    wall.sort()
    return statistics.median(wall), wall[min(len(wall) - 1, int(len(wall) * 0.95))], statistics.median(cpu)


# The overseer's pages (`--overseer`): their live fragments, as the browser refreshes them.
OVERSEER_PAGES = (
    "/fragments/leases",
    "/fragments/mail",
    "/fragments/mail?unacked=1",
    "/fragments/mail?agent=agent-007",
    "/fragments/mail/thread?thread=t-100",
    "/fragments/agents/agent-002",
    "/fragments/graph",
    "/fragments/knowledge?q=hello+message",
    "/fragments/knowledge?q=deadlock",
    "/fragments/knowledge?q=nowhere",
    "/fragments/trends",
)


async def main(database_url: str | None, rounds: int, overseer: bool = False, only: str = "") -> None:
    with tempfile.TemporaryDirectory(prefix="vibe-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url, rate_limit_per_minute={"admin": 0})
        runtime = Runtime(settings)
        await runtime.start(apply_migrations=True)
        token = await runtime.bootstrap_admin_token()
        assert token, "the database must be new (no credentials yet)"
        services = runtime.services
        caller = await services.tokens.authenticate(token)
        project = await services.projects.get(caller, None)
        started = time.perf_counter()
        await seed(runtime, project.id)
        if not runtime.db.is_sqlite:  # fresh statistics, as autovacuum would gather them in time
            async with runtime.db.write() as conn:
                await conn.execute(sa.text("ANALYZE"))
        print(
            f"seeded {ISSUES} issues, {AGENTS} agents, {MESSAGES} messages, {LEASES} leases, {EVENTS} events "
            f"on {runtime.db.dialect} in {time.perf_counter() - started:.1f} s"
        )
        app = create_app(runtime)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1", headers=headers
        ) as http:

            async def get(path: str) -> None:
                r = await http.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])

            found = await services.attention.overview(caller)
            print(
                f"attention finds: {len(found.silent)} silent holders, {found.blocked_total} blocked, "
                f"{len(found.unacked)} unacknowledged (shown), {len(found.expiring)} leases ending, "
                f"{len(found.conflicts)} conflicts"
            )
            cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("GET /fragments/board", lambda: get("/fragments/board")),
                ("GET /fragments/attention", lambda: get("/fragments/attention")),
                ("GET / (the whole page)", lambda: get("/")),
                ("service dashboard.board", lambda: services.dashboard.board(caller)),
                ("service briefings.board (REST)", lambda: services.briefings.board(caller)),
                ("service attention.overview", lambda: services.attention.overview(caller)),
            ]
            if overseer:
                cases = [(f"GET {path}", lambda path=path: get(path)) for path in OVERSEER_PAGES]
            cases = [(name, fn) for name, fn in cases if only in name]
            print(f"{'what':32} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>8}   ({rounds} rounds)")
            for name, fn in cases:
                median, p95, cpu = await timed(rounds, fn)
                print(f"{name:32} {median:10.1f} {p95:8.1f} {cpu:8.1f}")
        print(f"load average while measuring: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        await runtime.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an EMPTY database to seed (default: a new SQLite file)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--overseer", action="store_true", help="time the overseer's pages instead")
    parser.add_argument("--only", default="", help="time only the cases whose name holds this text")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="how many messages to seed")
    args = parser.parse_args()
    MESSAGES = args.messages
    asyncio.run(main(args.database_url, args.rounds, args.overseer, args.only))
