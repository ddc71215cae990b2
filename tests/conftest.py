"""Shared fixtures: a fresh database per test (SQLite file, or a new PostgreSQL database),
the services over it, and a real server process for end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store.database import Connection, normalise_url
from vibe_ensemble.store.tables import projects

from . import postgres
from .support import ServerProcess, start_server

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if postgres.required() and not postgres.given():
        raise pytest.UsageError("VIBE_REQUIRE_POSTGRES=1 but VIBE_TEST_POSTGRES_URL is not set")


def pytest_unconfigure(config: pytest.Config) -> None:
    postgres.stop()


def _skip_without_postgres() -> None:
    """PostgreSQL is started on first use by a test that needs it (a run without one pays nothing)."""
    if not postgres.url(ROOT):
        if postgres.required():
            pytest.fail("PostgreSQL tests must run here: " + postgres.why_not())
        pytest.skip(postgres.why_not())


def _admin_url() -> sa.URL:
    server = postgres.url(ROOT)
    assert server
    return sa.engine.make_url(normalise_url(server))


async def create_postgres_database() -> str:
    """A new, empty PostgreSQL database; returns its URL."""
    admin_url = _admin_url()
    name = f"vibe_test_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return admin_url.set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    admin_url = _admin_url()
    name = sa.engine.make_url(url).database
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"
        return
    _skip_without_postgres()
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (for tests that only make sense there)."""
    _skip_without_postgres()
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


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
