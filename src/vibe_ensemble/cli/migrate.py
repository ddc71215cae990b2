"""`vibe-ensemble migrate`: apply the database migrations."""

from __future__ import annotations

import typer

from vibe_ensemble.cli.common import ConfigOpt, DbOpt, err, run, settings_or_exit
from vibe_ensemble.services.base import open_database
from vibe_ensemble.store import migrate as migrations


def migrate(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Apply the database migrations (SQLite or PostgreSQL)."""
    settings = settings_or_exit(config, database_url=database_url)

    async def main() -> str:
        db = open_database(settings)
        try:
            await migrations.upgrade(db)
            return db.safe_url()
        finally:
            await db.dispose()

    url = run(main, database=settings.effective_database_url)
    err.print(f"migrated {url} to {migrations.head_revision()}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(migrate)
