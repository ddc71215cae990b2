"""The storage path alone: what the services cost per tool call, in process (no HTTP, no MCP).

    python bench/storage.py                          # a temporary SQLite file
    python bench/storage.py --database-url postgresql://…/empty_db      # written to!
    python bench/storage.py --rounds 2000 --mix

Each round is what one agent's swarm loop does (bench/swarm.py): check its token, send a
message to the next agent, check its token again and fetch its inbox. With `--mix`, also a
heartbeat, an issue created, claimed, commented and closed, a lease taken and released, and a
knowledge search (every round, where the swarm does it every fourth).
CPU per call is `time.process_time()` over the rounds divided by the tool calls made; on
PostgreSQL the server's own CPU is not included. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, TokenRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

AGENTS = 4


async def run(database_url: str, data_dir: Path, rounds: int, mix: bool) -> None:
    settings = Settings(database_url=database_url, data_dir=data_dir)  # type: ignore[call-arg]
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    s = rt.services
    try:
        names = [f"agent-{i}" for i in range(AGENTS)]
        secrets = []
        for name in names:
            await s.agents.register(SYSTEM, project="default", name=name, role=AgentRole.WORKER)
            _, secret = await s.tokens.create(SYSTEM, role=TokenRole.WORKER, project="default", agent=name)
            secrets.append(secret)

        async def one_round(i: int) -> int:
            me, peer = i % AGENTS, (i + 1) % AGENTS
            caller = await s.tokens.authenticate(secrets[me], throttle=False)
            await s.messages.send(caller, subject=f"s{i}", body="hello", to=[names[peer]])
            caller = await s.tokens.authenticate(secrets[peer], throttle=False)
            await s.messages.fetch_inbox(caller, limit=20)
            if not mix:
                return 2
            await s.agents.heartbeat(caller, status=AgentStatus.WORKING)
            issue = await s.issues.create(caller, title=f"task {i}")
            await s.issues.claim(caller, issue.id)
            await s.issues.comment(caller, issue.id, body="on it")
            await s.issues.close(caller, issue.id, "done")
            await s.reservations.reserve(caller, [f"src/{names[peer]}/**"], ttl_s=60)
            await s.reservations.release(caller)
            await s.knowledge.search(caller, "swarm")
            return 10

        for i in range(min(100, rounds)):  # warm-up: caches, prepared plans
            await one_round(i)
        calls = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(rounds):
            calls += await one_round(i)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        backend = "sqlite" if rt.db.is_sqlite else "postgresql"
        print(f"{backend} mix={mix} rounds={rounds} calls={calls}")
        print(f"  CPU per call {1000 * cpu / calls:.3f} ms   wall per call {1000 * wall / calls:.3f} ms")
    finally:
        await rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an EMPTY database (default: a temporary SQLite file)")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--mix", action="store_true", help="add heartbeat, claims, leases and search")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        asyncio.run(run(url, Path(tmp), args.rounds, args.mix))


if __name__ == "__main__":
    main()
