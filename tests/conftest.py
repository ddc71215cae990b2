"""Shared fixtures: a fresh database per test (SQLite file, or a new PostgreSQL database),
the services over it, and a real server process for end-to-end tests.

A test that uses `runtime` gets its database already migrated: a copy of one migrated at the
first such test of the process (the SQLite file copied; on PostgreSQL `CREATE DATABASE …
TEMPLATE`), as `Runtime.start(apply_migrations=True)` would leave it, without running the
migrations again for every test (on PostgreSQL a hundred DDL statements each). Every other test
gets an empty database, as before. PostgreSQL databases are reused within a process once emptied,
and only when they are again as new (tests/postgres_pool.py)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import migrate
from vibe_ensemble.store.database import Connection, Database, normalise_url
from vibe_ensemble.store.tables import projects

from . import postgres
from .postgres_pool import DatabasePool
from .support import ServerProcess, start_server

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if postgres.required() and not postgres.given():
        raise pytest.UsageError("VIBE_REQUIRE_POSTGRES=1 but VIBE_TEST_POSTGRES_URL is not set")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's databases while it runs the session: an xdist worker says it has finished
    after this hook, and is then given 5 s to end before it is interrupted."""
    if _pool is not None:
        template = _templates.pop("postgres", None)
        asyncio.run(_pool.close(*([template] if template else [])))


def pytest_unconfigure(config: pytest.Config) -> None:
    postgres.stop()


def skip_without_postgres() -> None:
    """PostgreSQL is started on first use by a test that needs it (a run without one pays nothing)."""
    if not postgres.url(ROOT):
        if postgres.required():
            pytest.fail("PostgreSQL tests must run here: " + postgres.why_not())
        pytest.skip(postgres.why_not())


_pool: DatabasePool | None = None


def new_database_pool() -> DatabasePool:
    """A pool of databases on the tests' PostgreSQL server (started on first use)."""
    server = postgres.url(ROOT)
    assert server
    return DatabasePool(sa.engine.make_url(normalise_url(server)))


def _databases() -> DatabasePool:
    global _pool
    if _pool is None:
        _pool = new_database_pool()
    return _pool


async def take_postgres_database(template: str | None = None) -> str:
    """A PostgreSQL database of the caller's own until it gives it back: as new, empty or a copy of
    the database at `template` (a URL); returns its URL. See tests/postgres_pool.py."""
    return await _databases().take(template)


async def give_back_postgres_database(url: str) -> None:
    await _databases().give_back(url)


# backend -> a database migrated to head, copied for each test that uses `runtime` (made once per process)
_templates: dict[str, str] = {}


async def _migrated(url: str) -> str:
    db = Database(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    return url


async def _template(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if backend not in _templates:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("template") / "vibe.db"
            _templates[backend] = await _migrated(f"sqlite+aiosqlite:///{path}")
            assert not path.with_name("vibe.db-wal").exists(), "the template must be one file"
        else:
            _templates[backend] = await _migrated(await take_postgres_database())
    return _templates[backend]


@pytest.fixture(params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A fresh database URL on each backend: empty, or migrated when the test uses `runtime`."""
    migrated = "runtime" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "vibe.db"
        if migrated:
            template = sa.engine.make_url(await _template("sqlite", tmp_path_factory)).database
            assert template
            shutil.copy2(template, path)  # with the template's private mode, as the server makes it
        yield f"sqlite+aiosqlite:///{path}"
        return
    skip_without_postgres()
    url = await take_postgres_database(await _template("postgres", tmp_path_factory) if migrated else None)
    try:
        yield url
    finally:
        await give_back_postgres_database(url)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (for tests that only make sense there)."""
    skip_without_postgres()
    url = await take_postgres_database()
    try:
        yield url
    finally:
        await give_back_postgres_database(url)


async def insert_project(conn: Connection, slug: str, now: datetime) -> int:
    """A project row written straight to its table, as a test of a migration writes data at an
    older schema revision (before the services' own writes apply); returns its id."""
    inserted = projects.insert().values(slug=slug, name=slug, created_at=now).returning(projects.c.id)
    return int((await conn.execute(inserted)).scalar_one())


def make_settings(database_url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(database_url, tmp_path))
    await rt.start(apply_migrations=True)
    try:
        yield rt
    finally:
        await rt.stop()


@pytest.fixture
def services(runtime: Runtime) -> Services:
    return runtime.services


@pytest.fixture
def admin() -> Caller:
    return SYSTEM


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `vibe-ensemble serve` process on SQLite and a free loopback port."""
    proc = start_server(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()
