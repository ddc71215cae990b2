"""Instructions per call of the tools besides the swarm's loop, counted by valgrind: ours alone.

    python bench/tool_instructions.py                          # every scenario, SQLite
    python bench/tool_instructions.py --scenario list_issues --scenario search_knowledge
    python bench/tool_instructions.py --database-url postgresql+asyncpg://postgres@host/postgres

`bench/instructions.py` counts the swarm's loop (send, fetch); this counts the other tools an agent
or the dashboard calls, one scenario at a time, the same way: our app in process (bench/stack.py,
no sockets) under valgrind's cachegrind with a fixed hash seed, once for `rounds` rounds and once
for three times as many, and the difference divided by the calls between them is what one call
costs, start-up and the scenario's set-up excluded. The set-up, alike for every scenario: four
agents, 20 issues (bodies of 200 characters; the third depends on the second), 30 knowledge entries
and 50 leases held by the calling agent. A scenario's calls repeat every ten rounds, so the two
runs make the same calls. Needs valgrind (Debian's `valgrind` package); a scenario takes about a
minute. Instructions are not time (see bench/instructions.py): they say which version of the code
does less, and do not drift with the machine.

With `--database-url` (PostgreSQL: a server and a database to connect to first), each run makes a
database of its own beside it (`vibe_bench_instr_<pid>_<n>`) and drops it afterwards; what
PostgreSQL itself executes is not counted, only our process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import facts  # bench/facts.py
import sqlalchemy as sa
from instructions import under_valgrind  # bench/instructions.py
from stack import start_ours  # bench/stack.py

WARM_UP = 50  # calls before the counted ones: caches, plans, the first call's work

Calls = list[tuple[str, dict[str, Any]]]

# Each scenario: the calls of round `i` (the agent is agent-0, bound to its token).
SCENARIOS: dict[str, Callable[[int], Calls]] = {
    "list_issues": lambda i: [("list_issues", {"limit": 20})],
    "list_issues_ready": lambda i: [("list_issues", {"limit": 20, "ready": True})],
    "list_issues_search": lambda i: [("list_issues", {"limit": 20, "query": f"issue {i % 10}"})],
    "get_issue": lambda i: [("get_issue", {"id": 3})],
    "search_knowledge": lambda i: [("search_knowledge", {"query": "swarm"})],
    "get_knowledge": lambda i: [("get_knowledge", {"id": 1 + i % 10})],
    "list_agents": lambda i: [("list_agents", {})],
    "heartbeat": lambda i: [("heartbeat", {"status": "working"})],
    "check_paths": lambda i: [("check_paths", {"paths": [f"src/p{i % 10}/x.py"]})],
    "reserve_release": lambda i: [
        ("reserve_paths", {"paths": [f"src/r{i % 10}/**"], "ttl_s": 60}),
        ("release_paths", {"paths": [f"src/r{i % 10}/**"]}),
    ],
}


async def child(scenarios: list[str], rounds: int, database_url: str | None, warm_up: int = WARM_UP) -> None:
    """Set up, warm up, then `rounds` rounds of each scenario, in process (a failed call ends the run)."""
    async with AsyncExitStack() as stack:
        ours, tokens = await start_ours(stack, database_url)
        token = tokens[0]

        async def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
            return await ours.call(token, tool, arguments)

        for i in range(20):
            depends = {"depends_on": [2]} if i == 2 else {}
            await call("create_issue", {"title": f"issue {i}", "body": "x" * 200, **depends})
        for i in range(30):
            body = "the swarm " + "y " * 100
            await call("add_knowledge", {"kind": "note", "title": f"swarm note {i}", "body": body})
        await call("reserve_paths", {"paths": [f"held/{i}/**" for i in range(50)], "ttl_s": 3600})
        for scenario in scenarios:
            for i in range(warm_up + rounds):
                for tool, arguments in SCENARIOS[scenario](i):
                    await call(tool, arguments)


def counted(scenario: str, rounds: int, database_url: str | None) -> int:
    """Instructions of one child run under cachegrind (start-up and set-up included)."""
    argv = [sys.executable, __file__, "--child", scenario, "--rounds", str(rounds)]
    return under_valgrind(scenario, argv + (["--database-url", database_url] if database_url else []))


async def _postgres(url: str, *statements: str) -> None:
    """Run `statements` one by one on the PostgreSQL server and database at `url` (outside a
    transaction, as CREATE and DROP DATABASE must)."""
    u = sa.engine.make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database
    )
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def per_call(scenario: str, rounds: int, server_url: str | None) -> float:
    names = [f"vibe_bench_instr_{os.getpid()}_{n}" for n in range(2)]  # on PostgreSQL: a database a run
    urls: list[str | None] = [None, None]
    if server_url:
        made = [s for n in names for s in (f'DROP DATABASE IF EXISTS "{n}"', f'CREATE DATABASE "{n}"')]
        asyncio.run(_postgres(server_url, *made))
        urls = [sa.engine.make_url(server_url).set(database=n).render_as_string(False) for n in names]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs side by side (two cores)
            short, long = pool.map(
                lambda a: counted(scenario, *a), ((rounds, urls[0]), (3 * rounds, urls[1]))
            )
    finally:
        if server_url:
            asyncio.run(_postgres(server_url, *(f'DROP DATABASE IF EXISTS "{n}"' for n in names)))
    calls = len(SCENARIOS[scenario](0))
    return (long - short) / (2 * rounds * calls)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="(repeatable; default all)"
    )
    parser.add_argument("--rounds", type=int, default=100, help="the shorter run's rounds (default 100)")
    parser.add_argument("--database-url", help="a PostgreSQL server to make the runs' databases on")
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run each scenario's calls once on SQLite, without valgrind, and stop (the smoke test)",
    )
    parser.add_argument("--child", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child([args.child], args.rounds, args.database_url))
        return
    if args.check:
        scenarios = args.scenario or list(SCENARIOS)
        asyncio.run(child(scenarios, 1, None, warm_up=0))  # on a temporary SQLite file
        print(f"checked: {', '.join(scenarios)}")
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    database = "postgresql" if args.database_url else "sqlite"
    print(
        f"instructions a call (valgrind, in process, {database}, {args.rounds} and {3 * args.rounds} rounds):"
    )
    figures = {}
    for scenario in args.scenario or list(SCENARIOS):
        figures[scenario] = round(per_call(scenario, args.rounds, args.database_url))
        print(f"  {scenario:20} {figures[scenario]:>12,}", flush=True)
    facts.write(args.json, "tool_instructions", args, {"database": database, "per_call": figures})


if __name__ == "__main__":
    main()
