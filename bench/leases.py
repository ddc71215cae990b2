"""Reservations among many live leases: how long `reserve_paths` takes (the service, in process,
SQLite) as the project's live leases grow.

    python bench/leases.py [--sizes 600,1500,5500,15500] [--calls 5]

One agent holds shared leases of 100 files in each of many directories (`src/modN/deep/dir/…`);
at each size another agent reserves one directory exclusively (`other/…/**`), and the first
reserves 100 more shared files. Every reservation is compared with every live lease of its
project (services/lease_conflicts.py), so this is what that costs. Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import facts  # bench/facts.py

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime


async def run(data_dir: Path, sizes: list[int], calls: int) -> dict[str, dict[str, float]]:
    settings = Settings(database_url=f"sqlite:///{data_dir}/bench.db", data_dir=data_dir)  # type: ignore[call-arg]
    runtime = Runtime(settings)
    await runtime.start(apply_migrations=True)
    figures: dict[str, dict[str, float]] = {}
    try:
        s = runtime.services
        callers = []
        for name in ("hoarder", "other"):
            await s.agents.register(SYSTEM, project="default", name=name, role=AgentRole.WORKER)
            _, secret = await s.tokens.create(SYSTEM, role=TokenRole.WORKER, project="default", agent=name)
            callers.append(await s.tokens.authenticate(secret))
        hoarder, other = callers
        live = 0
        for size in sizes:
            while live < size:
                paths = [f"src/mod{live // 100}/deep/dir/file{i}.py" for i in range(100)]
                await s.reservations.reserve(hoarder, paths=paths, exclusive=False, ttl_s=3600)
                live += 100
            started = time.perf_counter()
            for k in range(calls):
                await s.reservations.reserve(other, paths=[f"other/x{size}-{k}/**"], exclusive=True, ttl_s=60)
            exclusive_ms = 1000 * (time.perf_counter() - started) / calls
            started = time.perf_counter()
            for k in range(calls):
                paths = [f"src/extra{size}-{k}/f{i}.py" for i in range(100)]
                await s.reservations.reserve(hoarder, paths=paths, exclusive=False, ttl_s=3600)
            shared_ms = 1000 * (time.perf_counter() - started) / calls
            figures[str(live)] = {"exclusive_glob_ms": exclusive_ms, "shared_100_files_ms": shared_ms}
            print(
                f"live leases {live:>7,}: exclusive 1-glob reserve {exclusive_ms:8.1f} ms; "
                f"100 shared files {shared_ms:8.1f} ms"
            )
            live += 101 * calls  # (those just made are live too)
    finally:
        await runtime.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="600,1500,5500,15500", help="live leases to reach, in order")
    parser.add_argument("--calls", type=int, default=5, help="reservations timed at each size")
    parser.add_argument("--json", type=Path, help="write the figures and machine facts here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(run(Path(tmp), sizes, args.calls))
    facts.write(args.json, "leases", args, figures)


if __name__ == "__main__":
    main()
