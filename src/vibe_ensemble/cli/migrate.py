"""`vibe-ensemble migrate`: apply the database migrations."""

from __future__ import annotations

import typer

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, err, run, settings_or_exit
from vibe_ensemble.services.base import open_database
from vibe_ensemble.store import migrate as migrations
from vibe_ensemble.store.database import Owner, OwnerLock


def migrate(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Apply the database migrations (SQLite or PostgreSQL)."""
    settings = settings_or_exit(config, database_url=database_url)

    async def main() -> str:
        db = open_database(settings)
        # A SQLite file a server (or a restore) has open is not migrated under it: the owner lock
        # refuses, naming the owner. PostgreSQL's migrations run in a transaction of their own.
        lock = OwnerLock(db.path) if db.path is not None else None
        try:
            if lock is not None:
                lock.acquire(Owner(process="migrate"))
            await migrations.upgrade(db)
            return db.safe_url()
        finally:
            if lock is not None:
                lock.release()
            await db.dispose()

    url = run(main, database=settings.effective_database_url)
    err.print(f"migrated {url} to {migrations.head_revision()}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(migrate)
