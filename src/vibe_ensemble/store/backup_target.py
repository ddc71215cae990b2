"""A database a backup is taken from or restored into: its URL, backend and (SQLite) file."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.database import normalise_url, sqlite_path


def quote(name: str) -> str:
    """A table name quoted for SQL (the row counts of either backend)."""
    return '"' + name.replace('"', '""') + '"'


class Target:
    """A database a backup is taken from or restored into."""

    def __init__(self, url: str) -> None:
        self.url: URL = make_url(normalise_url(url))
        self.backend = self.url.get_backend_name()
        if self.backend not in ("sqlite", "postgresql"):
            raise BackupError(f"unsupported database {self.backend!r}: use sqlite or postgresql")
        self.path: Path | None = sqlite_path(self.url) if self.backend == "sqlite" else None

    @property
    def safe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def libpq(self) -> tuple[str, dict[str, str]]:
        """A libpq URL without the password, and the environment that carries it (never on argv)."""
        env = dict(os.environ)
        if self.url.password:
            env["PGPASSWORD"] = str(self.url.password)
        plain = self.url.set(drivername="postgresql", password=None)
        return plain.render_as_string(hide_password=False), env

    def dsn(self) -> str:
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def with_database(self, name: str) -> Target:
        return Target(self.url.set(database=name).render_as_string(hide_password=False))
