"""Knowledge search narrowed to a kind or tags finds them in the search index, so it gets the
windows an unnarrowed search has.

A search narrowed to a kind or tags ranked every match that passed them, each one tested against
its row of `knowledge`: 25-41 ms at 12,500 matches, over the 20 ms target. Now the kind and the
tag keys are in the index:

- SQLite: each project's FTS5 table gets a `kind` column and a `tag_keys` column, each value one
  token that no query word can be (its UTF-8 bytes in hex after a private-use character:
  `knowledge_rank.kind_token`, `tag_token`), which weigh nothing in bm25, so a search finds the
  entries of a kind carrying a tag like any word. The tables and their triggers are made again
  and filled from `knowledge`.
- PostgreSQL: `knowledge_terms` gets each entry's `kind` and `tag_keys` (an array; NULL for none),
  carried in its indexes (`INCLUDE`), so a word's newest entries of a kind or carrying tags are one
  index range walked backwards, read from the index alone. The table, its function and trigger
  (now also on an update of the kind or tag keys) are made again and filled from `knowledge`. The
  release before this one keeps working on it (it reads the same columns, and the trigger writes
  the kind and keys of what it writes); while this migration runs, its searches and knowledge
  writes wait for it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vibe_ensemble.store.knowledge import DROP_TERMS, terms_ddl
from vibe_ensemble.store.knowledge_rank import PREFIX, columns, ddl, values

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_TRIGGERS = ("ai", "ad", "au")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres_terms(narrowing=True)
        return
    for project_id in _fts_projects():
        _fill(project_id, narrowing=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgres_terms(narrowing=False)
        return
    for project_id in _fts_projects():
        _fill(project_id, narrowing=False)  # the tables and triggers of revisions 0003 to 0015


def _fts_projects() -> list[int]:
    """SQLite: the projects that have a search table (made with their first entry)."""
    names = op.get_bind().execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars()
    return sorted(int(n[len(PREFIX) :]) for n in names if n.startswith(PREFIX) and n[len(PREFIX) :].isdigit())


def _fill(project_id: int, *, narrowing: bool) -> None:
    """SQLite: the project's search table and triggers made again, with the kind's and tag keys'
    columns or without, and filled from its rows of `knowledge`."""
    for trigger in _TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {PREFIX}{project_id}_{trigger}")
    op.execute(f"DROP TABLE IF EXISTS {PREFIX}{project_id}")
    for statement in ddl(project_id, narrowing=narrowing):
        op.execute(statement)
    indexed = values("knowledge", narrowing=narrowing)
    op.execute(
        f"INSERT INTO {PREFIX}{project_id}(rowid, {columns(narrowing)}) "  # noqa: S608  # nosec B608
        f"SELECT id, {indexed} FROM knowledge WHERE project_id = {project_id}"
    )


def _postgres_terms(*, narrowing: bool) -> None:
    """`knowledge_terms` made again and filled, with each entry's kind and tag keys (this revision)
    or without them (revision 0015's)."""
    for statement in [*DROP_TERMS, *terms_ddl(narrowing=narrowing)]:
        op.execute(statement)
