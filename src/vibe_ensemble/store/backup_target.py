"""A database a backup is taken from or restored into: its URL, backend and (SQLite) file."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL

from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.database import DatabaseError, parse_url, sqlite_path


def quote(name: str) -> str:
    """A table name quoted for SQL (the row counts of either backend)."""
    return '"' + name.replace('"', '""') + '"'


class Target:
    """A database a backup is taken from or restored into."""

    def __init__(self, url: str, option: str = "the database URL") -> None:
        """`option`: what gave the URL (`--to`, `--scratch-url`), named when it is not a usable one."""
        try:
            self.url: URL = parse_url(url)
            self.path: Path | None = sqlite_path(self.url)
        except DatabaseError as exc:
            raise BackupError(f"{option}: {exc}") from None
        self.backend = self.url.get_backend_name()

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
