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

from vibe_ensemble.store.knowledge_rank import PREFIX, ddl, values

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
    columns = "title, body, tags, kind, tag_keys" if narrowing else "title, body, tags"
    indexed = values("knowledge") if narrowing else columns
    op.execute(
        f"INSERT INTO {PREFIX}{project_id}(rowid, {columns}) "  # noqa: S608  # nosec B608
        f"SELECT id, {indexed} FROM knowledge WHERE project_id = {project_id}"
    )


def _postgres_terms(*, narrowing: bool) -> None:
    """`knowledge_terms` made again and filled, with each entry's kind and tag keys (this revision)
    or without them (revision 0015's)."""
    op.execute("DROP TRIGGER IF EXISTS knowledge_terms_kept ON knowledge")
    op.execute("DROP FUNCTION IF EXISTS knowledge_terms_keep()")
    op.execute("DROP TABLE IF EXISTS knowledge_terms")
    extra_columns = "kind VARCHAR(16) NOT NULL, tag_keys TEXT[], " if narrowing else ""
    include = " INCLUDE (kind, tag_keys)" if narrowing else ""
    columns = "project_id, term, entry_id, heading" + (", kind, tag_keys" if narrowing else "")
    op.execute(
        "CREATE TABLE knowledge_terms ("
        "project_id BIGINT NOT NULL, "
        "term TEXT NOT NULL, "
        "entry_id BIGINT NOT NULL REFERENCES knowledge (id) ON DELETE CASCADE, "
        f"heading BOOLEAN NOT NULL, {extra_columns}"
        f"CONSTRAINT pk_knowledge_terms PRIMARY KEY (project_id, term, entry_id){include})"
    )
    # the newest entries holding a word in a title or tags
    op.execute(
        "CREATE INDEX ix_knowledge_terms_heading ON knowledge_terms (project_id, term, entry_id)"
        f"{include} WHERE heading"
    )
    # an entry's rows, found to be replaced when it is edited
    op.execute("CREATE INDEX ix_knowledge_terms_entry_id ON knowledge_terms (entry_id)")

    def narrowed(row: str) -> str:
        """The kind and tag keys of an entry (`NEW`, `k`): its keys as text (an older release's entry
        without keys: its tags as written, as the tag filter reads them), NULL for none."""
        if not narrowing:
            return ""
        keys = f"coalesce({row}.tag_keys, {row}.tags)"
        return f", {row}.kind, NULLIF(ARRAY(SELECT jsonb_array_elements_text({keys})), '{{}}')"

    # An entry's terms: each lexeme of its `search` vector once, and whether its title or tags hold it.
    # (the columns are this module's)
    op.execute(
        "CREATE FUNCTION knowledge_terms_keep() RETURNS trigger "  # noqa: S608  # nosec B608
        "LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'UPDATE' THEN DELETE FROM knowledge_terms WHERE entry_id = OLD.id; END IF; "
        f"INSERT INTO knowledge_terms ({columns}) "
        f"SELECT NEW.project_id, t.lexeme, NEW.id, t.weights && ARRAY['A', 'B']{narrowed('NEW')} "
        "FROM unnest(NEW.search) AS t; "
        "RETURN NULL; END $$"
    )
    of_narrowing = "kind, tag_keys, " if narrowing else ""
    op.execute(
        f"CREATE TRIGGER knowledge_terms_kept AFTER INSERT OR UPDATE OF project_id, {of_narrowing}title, "
        "body, tags ON knowledge FOR EACH ROW EXECUTE FUNCTION knowledge_terms_keep()"
    )
    op.execute(
        f"INSERT INTO knowledge_terms ({columns}) "  # noqa: S608  # nosec B608: this module's columns
        f"SELECT k.project_id, t.lexeme, k.id, t.weights && ARRAY['A', 'B']{narrowed('k')} "
        "FROM knowledge AS k, unnest(k.search) AS t"
    )
    op.execute("ANALYZE knowledge_terms")
