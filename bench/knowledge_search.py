"""Knowledge search at scale: p50/p95 of `search_knowledge` (the service, in process) with
50,000 entries spread over several projects (issue 11: p95 <= 20 ms).

    python bench/knowledge_search.py [--entries 50000] [--projects 10] [--queries 200]
    python bench/knowledge_search.py --database-url postgresql+asyncpg://…/empty_db    # written to!

Entries are written straight through the store in large transactions (triggers keep each
project's FTS5 table on SQLite, `knowledge_terms` on PostgreSQL; there a VACUUM ANALYZE follows,
as autovacuum would soon do), with titles, bodies and tags drawn from a Zipf-distributed vocabulary of
5,000 words. Two-word queries are timed by how common their words are: `common` words (the 10
most frequent) are in nearly every entry, `rare` ones in a few dozen. Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from scale import vacuum  # bench/scale.py

from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.store import knowledge as store

VOCABULARY = [f"w{i}x" for i in range(5000)]
ZIPF = [1 / (i + 1) for i in range(len(VOCABULARY))]
BANDS = {"common": (0, 10), "frequent": (10, 100), "medium": (100, 1000), "rare": (1000, 5000)}


def words(rng: random.Random, n: int) -> list[str]:
    return rng.choices(VOCABULARY, ZIPF, k=n)


async def run(data_dir: Path, database_url: str | None, entries: int, projects: int, queries: int) -> None:
    url = database_url or f"sqlite:///{data_dir}/bench.db"
    settings = Settings(database_url=url, data_dir=data_dir)  # type: ignore[call-arg]
    rt = Runtime(settings)
    await rt.start(apply_migrations=True)
    rng, now = random.Random(1), datetime.now(UTC)
    try:
        ids = [(await rt.services.projects.create(SYSTEM, slug=f"p{i}")).id for i in range(projects)]
        for start in range(0, entries, 2000):
            async with rt.db.write() as conn:
                for n in range(start, min(entries, start + 2000)):
                    title, body = words(rng, rng.randint(3, 8)), words(rng, rng.randint(20, 150))
                    await store.insert(
                        conn, project_id=ids[n % projects], kind=KnowledgeKind.NOTE, title=" ".join(title),
                        body=" ".join(body), tags=words(rng, 2), issue_ids=[], author="bench", now=now,
                    )  # fmt: skip
        if not rt.db.is_sqlite:
            await vacuum(url)
        print(f"{'sqlite' if rt.db.is_sqlite else 'postgresql'}: {entries} entries over {projects} projects")
        for band, (lo, hi) in BANDS.items():
            times = []
            for _ in range(queries):
                query = " ".join(VOCABULARY[rng.randrange(lo, hi)] for _ in range(2))
                start_t = time.perf_counter()
                await rt.services.knowledge.search(SYSTEM, query, project=f"p{rng.randrange(projects)}")
                times.append(1000 * (time.perf_counter() - start_t))
            times.sort()
            p50, p95 = times[len(times) // 2], times[int(len(times) * 0.95)]
            print(
                f"  {band:9} words {lo}-{hi}: p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   max {times[-1]:6.2f} ms"
            )
    finally:
        await rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--database-url", help="an EMPTY database (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), args.database_url, args.entries, args.projects, args.queries))


if __name__ == "__main__":
    main()
