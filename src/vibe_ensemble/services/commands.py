"""How a printed command runs `vibe-ensemble` on the same database as these settings, pasted into a
fresh shell: `VIBE_DATA_DIR=… ` or `VIBE_DATABASE_URL=… ` in front when needed, then the program.
The CLI's lines and doctor's fixes both say commands this way."""

from __future__ import annotations

import shlex

from vibe_ensemble.ops.config import Settings
from vibe_ensemble.ops.startup import command, default_data_dir
from vibe_ensemble.store.urls import database_label, sqlite_file


def database_env(settings: Settings) -> str:
    """What a printed command needs in front of it to use the same database as `settings`:
    `VIBE_DATA_DIR=… ` when the SQLite file is in another than the default data directory,
    `VIBE_DATABASE_URL=… ` when a URL names the database (never one with a password: that is not
    printed), else nothing. A command pasted from another shell then acts on this database."""
    url = settings.database_url
    if url is None:
        data_dir = settings.data_dir.expanduser().resolve()
        if data_dir == default_data_dir().resolve():
            return ""
        return f"VIBE_DATA_DIR={shlex.quote(str(data_dir))} "
    path = sqlite_file(url)
    if path is not None:  # absolute, so that it names the same file from any directory
        return f"VIBE_DATABASE_URL={shlex.quote(f'sqlite+aiosqlite:///{path.resolve()}')} "
    return f"VIBE_DATABASE_URL={shlex.quote(url)} " if database_label(url) == url else ""


def command_for(settings: Settings) -> str:
    """`vibe-ensemble` as a printed command runs it on `settings`' database (its prefix, then the
    program: `command()`)."""
    return database_env(settings) + command()
