"""The tests' PostgreSQL databases are reused only when they are again as new (tests/postgres_pool.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa

from ..conftest import new_database_pool, skip_without_postgres
from ..postgres_pool import DatabasePool, deletion_order, dsn


def test_a_table_is_emptied_before_the_tables_it_references() -> None:
    references = [
        ("comments", "issues"),
        ("issues", "projects"),
        ("agents", "projects"),
        ("issues", "issues"),
    ]
    order = deletion_order(["projects", "issues", "agents", "comments"], references)
    assert order.index("comments") < order.index("issues") < order.index("projects")
    assert order.index("agents") < order.index("projects")
    with pytest.raises(ValueError, match="cycle"):
        deletion_order(["a", "b"], [("a", "b"), ("b", "a")])


@pytest.fixture
async def pool() -> AsyncIterator[DatabasePool]:
    skip_without_postgres()
    databases = new_database_pool()
    try:
        yield databases
    finally:
        await databases.close()


@pytest.fixture
async def template(pool: DatabasePool) -> AsyncIterator[str]:
    """A database with two tables, one referencing the other, to take copies of."""
    url = await pool.take()
    conn = await asyncpg.connect(dsn(url))
    await conn.execute("CREATE TABLE parents (id serial PRIMARY KEY, name text NOT NULL)")
    await conn.execute(
        "CREATE TABLE children (id serial PRIMARY KEY, parent int NOT NULL REFERENCES parents)"
    )
    await conn.close()
    try:
        yield url
    finally:
        await pool.drop(url)


@pytest.mark.postgres
async def test_a_database_comes_back_empty_with_its_sequences_restarted(
    pool: DatabasePool, template: str
) -> None:
    first = await pool.take(template)
    conn = await asyncpg.connect(dsn(first))
    parent = await conn.fetchval("INSERT INTO parents (name) VALUES ('a') RETURNING id")
    await conn.execute("INSERT INTO children (parent) VALUES ($1), ($1)", parent)
    # left open on purpose: giving the database back cuts its connections
    await pool.give_back(first)
    assert conn.is_closed() or not await _alive(conn)

    again = await pool.take(template)
    assert again == first and pool.reused == 1
    conn = await asyncpg.connect(dsn(again))
    try:
        assert await conn.fetchval("SELECT count(*) FROM parents") == 0
        assert await conn.fetchval("SELECT count(*) FROM children") == 0
        assert await conn.fetchval("INSERT INTO parents (name) VALUES ('b') RETURNING id") == 1
    finally:
        await conn.close()
    await pool.give_back(again)


@pytest.mark.postgres
async def test_a_database_whose_schema_changed_is_dropped_not_reused(
    pool: DatabasePool, template: str
) -> None:
    for change in (
        "CREATE INDEX ON parents (name)",
        "ALTER TABLE children ADD COLUMN note text",
        "CREATE SCHEMA x",
    ):
        url = await pool.take(template)
        conn = await asyncpg.connect(dsn(url))
        await conn.execute(change)
        await conn.close()
        dropped = pool.dropped
        await pool.give_back(url)
        assert pool.dropped == dropped + 1, change
        name = sa.engine.make_url(url).database
        admin = await asyncpg.connect(dsn(pool.admin_url))
        try:
            assert not await admin.fetchval(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name
            )
        finally:
            await admin.close()
        fresh = await pool.take(template)
        assert fresh != url
        await pool.give_back(fresh)
    assert pool.reused == 2  # the fresh ones, made after each drop, came back as new


@pytest.mark.postgres
async def test_a_database_whose_index_the_planner_may_pass_over_is_dropped(pool: DatabasePool) -> None:
    """An index built where a row had just been updated, while an older snapshot was open, is one
    the planner passes over for snapshots older than its build (`indcheckxmin`), as migration 0018's
    was after 0009's backfill in a migration test: the same definition, but not as new."""
    template = await pool.take()
    conn = await asyncpg.connect(dsn(template))
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text, note text)")
    await conn.execute("CREATE INDEX t_name ON t (name)")
    await conn.close()
    try:
        url = await pool.take(template)
        older, conn = await asyncpg.connect(dsn(url)), await asyncpg.connect(dsn(url))
        snapshot = older.transaction(isolation="repeatable_read")
        await snapshot.start()
        await older.fetchval("SELECT 1")  # its snapshot taken (no lock on t, which DROP INDEX needs)
        await conn.execute("INSERT INTO t VALUES (1, 'a', 'x')")
        await conn.execute("UPDATE t SET note = 'y'")  # a HOT update: the old version recently dead
        await conn.execute("DROP INDEX t_name")
        await conn.execute("CREATE INDEX t_name ON t (name)")  # the same definition
        assert await conn.fetchval("SELECT indcheckxmin FROM pg_index WHERE indexrelid = 't_name'::regclass")
        await snapshot.rollback()
        await older.close()
        await conn.close()
        dropped = pool.dropped
        await pool.give_back(url)
        assert pool.dropped == dropped + 1
    finally:
        await pool.drop(template)


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, OSError, asyncpg.exceptions.ConnectionDoesNotExistError):
        return False
    return True


@pytest.mark.postgres
async def test_a_database_stamped_with_another_revision_is_dropped(pool: DatabasePool, template: str) -> None:
    conn = await asyncpg.connect(dsn(template))
    await conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    await conn.execute("INSERT INTO alembic_version VALUES ('0006')")
    await conn.close()
    url = await pool.take(template)
    conn = await asyncpg.connect(dsn(url))
    await conn.execute("UPDATE alembic_version SET version_num = 'older'")
    await conn.close()
    await pool.give_back(url)
    assert pool.dropped == 1 and pool.reused == 0


@pytest.mark.postgres
async def test_a_kind_whose_new_databases_hold_rows_is_never_reused(
    pool: DatabasePool, template: str
) -> None:
    conn = await asyncpg.connect(dsn(template))
    await conn.execute("INSERT INTO parents (name) VALUES ('seeded')")
    await conn.close()
    url = await pool.take(template)
    await pool.give_back(url)
    assert pool.dropped == 1
    fresh = await pool.take(template)
    assert fresh != url
    await pool.give_back(fresh)
