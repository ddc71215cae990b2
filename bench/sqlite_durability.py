"""The cost of SQLite's `synchronous=FULL` (the default) against `NORMAL`, per acknowledged write.

    python bench/sqlite_durability.py [--writes 300] [--dir DIR]

Sends the same number of messages through the service layer (one write transaction each, as an
MCP `send_message` does) with each setting, one after the other, on a file in DIR (default: a
temporary directory; give one on the disk you deploy to). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime


async def measure(level: str, directory: Path, writes: int) -> list[float]:
    path = directory / f"durability-{level.lower()}.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{path}", data_dir=directory, sqlite_synchronous=level
    )
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    try:
        for name in ("ann", "bob"):
            await rt.services.agents.register(SYSTEM, name=name, role=AgentRole.WORKER, project="default")
        latencies = []
        for i in range(writes):
            started = time.perf_counter()
            await rt.services.messages.send(
                SYSTEM, to=["bob"], subject=f"m{i}", body="hello", project="default", agent="ann"
            )
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vibe-bench-sync-", dir=args.dir) as tmp:
        for level in ("NORMAL", "FULL", "NORMAL", "FULL"):  # twice each, interleaved, against drift
            lat = asyncio.run(measure(level, Path(tmp), args.writes))
            lat.sort()
            total = sum(lat)
            median, p95 = statistics.median(lat) * 1000, lat[int(len(lat) * 0.95)] * 1000
            print(
                f"synchronous={level:6} {args.writes} writes: {args.writes / total:6.0f} writes/s, "
                f"median {median:5.2f} ms, p95 {p95:5.2f} ms"
            )


if __name__ == "__main__":
    main()
