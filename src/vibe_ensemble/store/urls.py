"""Database URLs for people: the SQLite file behind a URL, and a URL that is safe to print."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def sqlite_file(database_url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases or a URL that does not parse)."""
    try:
        url = make_url(database_url)
    except Exception:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def database_label(database_url: str) -> str:
    """A database for people: the SQLite file's path, or the URL without its password."""
    path = sqlite_file(database_url)
    if path is not None:
        return str(path.resolve())
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable database URL)"
