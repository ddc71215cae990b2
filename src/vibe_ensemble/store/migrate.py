"""Apply and inspect Alembic migrations on either backend, on a plain SQLAlchemy connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from vibe_ensemble.store.database import Database

_SCRIPTS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(db: Database, revision: str = "head") -> None:
    def run(sync_conn: Connection) -> None:
        command.upgrade(_config(sync_conn), revision)

    await db.run_sync(run, write=True)


async def current_revision(db: Database) -> str | None:
    def run(sync_conn: Connection) -> Any:
        return MigrationContext.configure(sync_conn).get_current_revision()

    rev: str | None = await db.run_sync(run)
    return rev


async def is_current(db: Database) -> bool:
    return await current_revision(db) == head_revision()


def autogenerate(connection: Connection, message: str) -> None:
    """Developer helper: write a new revision from the difference to `tables.py`."""
    command.revision(_config(connection), message=message, autogenerate=True)
