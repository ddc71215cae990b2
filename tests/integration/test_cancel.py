"""A task cancelled in the middle of a PostgreSQL write ends cancelled (it is not turned into another
error, which would keep a stopping duty loop running), and the database serves the next write."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from vibe_ensemble.store.database import Database


async def test_a_write_cancelled_mid_statement_ends_cancelled_and_the_pool_recovers(
    postgres_url: str,
) -> None:
    db = Database(postgres_url, pool_size=2)
    try:
        started = asyncio.Event()

        async def slow_write() -> None:
            async with db.write() as conn:
                started.set()
                await conn.execute(sa.text("SELECT pg_sleep(30)"))

        task = asyncio.create_task(slow_write())
        await asyncio.wait_for(started.wait(), 10)
        running = sa.text("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
        async with asyncio.timeout(10):
            while True:  # until the statement is running on the server
                async with db.read() as conn:
                    if (await conn.execute(running)).scalar_one() >= 1:
                        break
                await asyncio.sleep(0.01)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done and task.cancelled()

        async with asyncio.timeout(10), db.write() as conn:  # the one pooled connection, or its replacement
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
