"""PostgreSQL databases for tests, reused within a test process.

Making a database (`CREATE DATABASE`, from a template or not) and dropping it afterwards costs the
server about 0.3 s of CPU, and a run makes about 160. Emptying one costs about 10 ms. So a database
a test is done with is emptied and handed to the next test of the same process that asks for one
of its kind, but only when it is again exactly what a new one would be:

- its schema has the fingerprint that kind had when first made: every schema, relation, column,
  default, constraint, index, trigger, function, extension and sequence, with owners and grants,
  and the rows of `alembic_version` (the revision). An index counts with whether it is valid, ready
  and usable at once (`indcheckxmin`: an index built where rows had just been updated, as migration
  0018's is after 0009's backfill, is passed over by the planner for any snapshot older than its
  build, a while when other tests' transactions run: a reused database planned a sequential scan);
- every other table is empty (deleted in the order the foreign keys allow), and every sequence is
  back at its start.

Anything else (a test that migrated only part of the way, altered or broke its database, or a
reset that fails) and the database is dropped, as it always was; so is every database of a kind
whose new databases hold rows (seeded by a migration). The kinds are "empty" and a copy of a
migrated template; a database made empty and migrated to head by a server comes back as the
template's kind. Every connection to a database is cut before it is reset or dropped: each one is
only ever this process's own.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import sqlalchemy as sa

# The schema, catalogued: one text line per object, hashed. System schemas are left out.
FINGERPRINT = """
WITH ours AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_to%'
      AND nspname NOT LIKE 'pg\\_temp%'
), lines AS (
    SELECT 'schema ' || nspname || ' ' || nspowner::regrole || ' ' || coalesce(nspacl::text, '') AS line
    FROM pg_namespace WHERE oid IN (SELECT oid FROM ours)
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || c.relowner::regrole || ' '
        || coalesce(c.relacl::text, '')
    FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ours)
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' '
        || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
        || a.attidentity::text || ' ' || a.attgenerated::text || ' '
        || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace IN (SELECT oid FROM ours) AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ours)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid) || ' ' || indisvalid::text || ' ' || indisready::text
        || ' ' || indcheckxmin::text FROM pg_index
    WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM ours))
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger
    WHERE NOT tgisinternal
      AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM ours))
    UNION ALL
    SELECT 'function ' || oid::regprocedure || ' ' || md5(prosrc) FROM pg_proc
    WHERE pronamespace IN (SELECT oid FROM ours)
    UNION ALL
    SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
    UNION ALL
    SELECT 'sequence ' || seqrelid::regclass || ' ' || seqstart || ' ' || seqincrement FROM pg_sequence
    WHERE seqrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM ours))
    UNION ALL
    SELECT 'settings ' || count(*) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM lines
"""

TABLES = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' AND c.relname <> 'alembic_version'
"""

# (referencing table, referenced table) of every foreign key between two different tables
REFERENCES = """
SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
WHERE contype = 'f' AND conrelid <> confrelid
"""

RESTART_SEQUENCES = """
SELECT count(setval(seqrelid, seqstart, false)) FROM pg_sequence
WHERE seqrelid IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public')
"""


def dsn(url: sa.URL | str) -> str:
    """A database URL as asyncpg takes it."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def fingerprint(conn: asyncpg.Connection) -> str:
    """The schema's fingerprint and the migration revision it is stamped with, if any."""
    schema = await conn.fetchval(FINGERPRINT)
    if await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NULL"):
        return f"{schema} unstamped"
    revisions = await conn.fetch("SELECT version_num FROM alembic_version ORDER BY version_num")
    return f"{schema} at {','.join(row[0] for row in revisions)}"


async def _rows_in(conn: asyncpg.Connection, tables: list[str]) -> list[str]:
    """Those of `tables` that hold a row (one query)."""
    if not tables:
        return []
    holding = ", ".join(f"CASE WHEN EXISTS (SELECT FROM {t}) THEN '{t}' END" for t in tables)
    found: list[str] = await conn.fetchval(f"SELECT array_remove(ARRAY[{holding}], NULL)")
    return found


def deletion_order(tables: list[str], references: list[tuple[str, str]]) -> list[str]:
    """`tables` with every table before the tables it references (so each DELETE finds no row
    pointing at what it deletes)."""
    waiting = set(tables)
    ordered: list[str] = []
    while waiting:
        # a table no other waiting table references can go now
        free = sorted(t for t in waiting if not any(b == t != a and a in waiting for a, b in references))
        if not free:
            raise ValueError(f"foreign keys form a cycle among {sorted(waiting)}")
        ordered += free
        waiting -= set(free)
    return ordered


class DatabasePool:
    """This process's PostgreSQL databases: taken by tests, emptied and taken again."""

    def __init__(self, admin_url: sa.URL) -> None:
        self.admin_url = admin_url
        self._kinds: dict[str, str] = {}  # schema fingerprint -> kind ("empty", or a template's URL)
        self._examined: set[str] = set()  # the kinds whose first database was looked at
        self._order: dict[str, list[str]] = {}  # kind -> its tables (but alembic_version), in deletion order
        self._idle: dict[str, list[str]] = {}  # kind -> emptied databases
        self.made = self.reused = self.dropped = 0

    async def take(self, template: str | None = None) -> str:
        """A database of its own for a test, empty or a copy of `template` (a URL); give it back."""
        kind = template or "empty"
        idle = self._idle.get(kind)
        if idle:
            self.reused += 1
            return idle.pop()
        name = f"vibe_test_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{sa.engine.make_url(template).database}"' if template else ""
        await self._admin(f'CREATE DATABASE "{name}"{copy}')
        self.made += 1
        url = self.admin_url.set(database=name)
        if kind not in self._examined:
            self._examined.add(kind)
            conn = await asyncpg.connect(dsn(url))
            try:
                tables = [row[0] for row in await conn.fetch(TABLES)]
                # A kind whose new databases hold rows (seeded by a migration) is never reused:
                # emptying one would leave it unlike a new one.
                if not await _rows_in(conn, tables):
                    self._kinds[await fingerprint(conn)] = kind
                    references = [(row[0], row[1]) for row in await conn.fetch(REFERENCES)]
                    self._order[kind] = deletion_order(tables, references)
            finally:
                await conn.close()
        return url.render_as_string(hide_password=False)

    async def give_back(self, url: str) -> None:
        """The test is done with the database at `url`: emptied for the next test, or dropped."""
        name = sa.engine.make_url(url).database
        await self._admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        try:
            kind = await self._reset(sa.engine.make_url(url))
        except (OSError, asyncpg.PostgresError):
            kind = None
        if kind is None:
            await self.drop(url)
        else:
            self._idle.setdefault(kind, []).append(url)

    async def _reset(self, url: sa.URL) -> str | None:
        """Empty the database and return its kind; None when it is no longer like a new one."""
        conn = await asyncpg.connect(dsn(url))
        try:
            kind = self._kinds.get(await fingerprint(conn))
            if kind is None:
                return None
            tables = self._order[kind]  # the same schema as when the kind was examined
            async with conn.transaction():
                if tables:  # one round trip: without arguments, asyncpg sends them as one simple query
                    await conn.execute("; ".join(f"DELETE FROM {table}" for table in tables))
                await conn.fetchval(RESTART_SEQUENCES)
                left = await _rows_in(conn, tables)
                if left:
                    raise asyncpg.DataError(f"rows left in {left}")
            return kind
        finally:
            await conn.close()

    async def drop(self, url: str) -> None:
        self.dropped += 1
        await self._admin(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)')

    async def close(self, *others: str) -> None:
        """Drop every idle database, and `others` (at the end of the process), all at once."""
        idle = [url for urls in self._idle.values() for url in urls]
        self._idle.clear()
        await asyncio.gather(*(self.drop(url) for url in [*idle, *others]))

    async def _admin(self, sql: str, *args: object) -> None:
        conn = await asyncpg.connect(dsn(self.admin_url))
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()
