"""Apply and inspect Alembic migrations on either backend, on a plain SQLAlchemy connection.

Serving only checks that the database is at `HEAD`: one query of `alembic_version`, without
importing Alembic (its import is a good part of a second of start-up). Alembic itself is imported
when migrations are applied, generated or listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection

from vibe_ensemble.store import faults, locks
from vibe_ensemble.store.database import Database, DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions; a new migration moves it (a unit test compares it
# with what Alembic computes from the scripts).
HEAD = "0020"

_SCRIPTS = Path(__file__).parent / "migrations"
# Every revision this program has a script for, oldest first (`0001_initial.py` is 0001): read from
# the file names, so that knowing a database's revision needs no Alembic.
KNOWN = sorted(p.name[:4] for p in (_SCRIPTS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
_VERSION = sa.table("alembic_version", sa.column("version_num", sa.String))


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


async def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate to `revision`; a database at a revision this program does not know (a newer program
    migrated it) is refused with `DatabaseError`, before Alembic looks for its script."""
    from alembic import command

    def run(sync_conn: Connection) -> None:
        if sync_conn.dialect.name == "postgresql":  # one migration at a time (store/locks.py)
            sync_conn.execute(sa.select(sa.func.pg_advisory_xact_lock(locks.MIGRATIONS, 0)))
        found = _revision(sync_conn)
        if found is not None and found not in KNOWN:
            raise DatabaseError(schema_problem(found, db.safe_url()) or "")
        command.upgrade(_config(sync_conn), revision)

    await db.run_sync(run, write=True)


def _revision(sync_conn: Connection) -> str | None:
    if not sa.inspect(sync_conn).has_table("alembic_version"):
        return None
    try:
        rows = sync_conn.execute(sa.select(_VERSION.c.version_num)).scalars().all()
    except sa.exc.DBAPIError as exc:
        if not faults.permission_denied(exc):
            raise
        url = sync_conn.engine.url.render_as_string(hide_password=True)
        raise DatabaseError(faults.no_rights(exc, url)) from None
    if len(rows) > 1:
        raise DatabaseError(
            f"the database has several schema revisions ({', '.join(rows)}) in its alembic_version "
            "table, where this vibe-ensemble writes one: it was migrated by another program, or edited "
            "by hand; restore a backup taken before, or keep the row of the revision its schema is at"
        )
    return rows[0] if rows else None


async def current_revision(db: Database, *, bound_s: float | None = None) -> str | None:
    """The database's schema revision (None before the first migration); on PostgreSQL, within
    `bound_s` (default: a request's bound) or TimeoutError."""
    return await db.run_sync(_revision, bound_s=bound_s)


async def is_current(db: Database) -> bool:
    return await current_revision(db) == HEAD


def is_newer(revision: str | None) -> bool:
    """Whether `revision` is a later revision than this program's newest (a newer release migrated
    the database), as opposed to one it knows or one it has never heard of."""
    return revision is not None and len(revision) == len(HEAD) and revision.isdigit() and revision > HEAD


def unknown_revision(revision: str | None) -> str | None:
    """`schema revision R, …`: why this program cannot take a schema at `revision` (a newer program's,
    or one it has no script for); None when it can (a revision it knows, or none: never migrated)."""
    if revision is None or revision in KNOWN:
        return None
    if is_newer(revision):
        return f"schema revision {revision}, newer than this program knows (its newest is {HEAD})"
    return (
        f"schema revision {revision[:40]!r}, which this program does not know (its revisions are "
        f"{KNOWN[0]} to {HEAD})"
    )


def schema_problem(revision: str | None, where: str) -> str | None:
    """What keeps this program from serving the database at `where` whose schema is at `revision`,
    and what to do about it; None when it is at `HEAD`."""
    if revision == HEAD:
        return None
    if revision is None or revision in KNOWN:
        return (
            f"the database at {where} is not migrated to the current schema: "
            "run `vibe-ensemble migrate` first (or serve with --migrate)"
        )
    return (
        f"the database at {where} is at schema revision {revision}, newer than this program knows "
        f"(its newest is {HEAD}): a newer vibe-ensemble migrated it; run that version, or restore the "
        "backup taken before the upgrade (migrations only go forward)"
    )


def autogenerate(connection: Connection, message: str) -> None:
    """Developer helper: write a new revision from the difference to `tables.py`."""
    from alembic import command

    command.revision(_config(connection), message=message, autogenerate=True)
