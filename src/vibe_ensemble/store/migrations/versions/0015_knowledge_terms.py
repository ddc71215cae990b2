"""PostgreSQL: each knowledge entry's search terms in a table ordered by project, term and entry, so a
search finds a word's newest matches in its project without reading every project's.

Knowledge search on PostgreSQL read each query word's matches through the GIN index on `search`,
which holds every project's entries, and ranked all of the project's matches: 34-36 ms p95 on the
scale bench, where every entry holds both query words. `knowledge_terms` holds one row per entry and
lexeme of its `search` tsvector (`heading`: the lexeme is in the title or the tags, weights A or
B), with the primary key (project_id, term, entry_id): a word's newest matches in a project are the
first rows of one index range walked backwards (store/knowledge.py). A trigger keeps the table equal
to `search` on every insert and on every update of the columns it is made of (so a release before
this one, during a rolling upgrade, keeps it too); a deleted entry's rows go with it (ON DELETE
CASCADE). Entries written before this revision get their rows here. SQLite has its FTS5 tables
(store/knowledge_rank.py) and nothing changes there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE knowledge_terms ("
        "project_id BIGINT NOT NULL, "
        "term TEXT NOT NULL, "
        "entry_id BIGINT NOT NULL REFERENCES knowledge (id) ON DELETE CASCADE, "
        "heading BOOLEAN NOT NULL, "
        "CONSTRAINT pk_knowledge_terms PRIMARY KEY (project_id, term, entry_id))"
    )
    # the newest entries holding a word in a title or tags
    op.execute(
        "CREATE INDEX ix_knowledge_terms_heading ON knowledge_terms (project_id, term, entry_id) "
        "WHERE heading"
    )
    # an entry's rows, found to be replaced when it is edited
    op.execute("CREATE INDEX ix_knowledge_terms_entry_id ON knowledge_terms (entry_id)")
    # An entry's terms: each lexeme of its `search` vector once, and whether its title or tags hold it.
    op.execute(
        "CREATE FUNCTION knowledge_terms_keep() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'UPDATE' THEN DELETE FROM knowledge_terms WHERE entry_id = OLD.id; END IF; "
        "INSERT INTO knowledge_terms (project_id, term, entry_id, heading) "
        "SELECT NEW.project_id, t.lexeme, NEW.id, t.weights && ARRAY['A', 'B'] "
        "FROM unnest(NEW.search) AS t; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER knowledge_terms_kept AFTER INSERT OR UPDATE OF project_id, title, body, tags "
        "ON knowledge FOR EACH ROW EXECUTE FUNCTION knowledge_terms_keep()"
    )
    op.execute(
        "INSERT INTO knowledge_terms (project_id, term, entry_id, heading) "
        "SELECT k.project_id, t.lexeme, k.id, t.weights && ARRAY['A', 'B'] "
        "FROM knowledge AS k, unnest(k.search) AS t"
    )
    op.execute("ANALYZE knowledge_terms")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS knowledge_terms_kept ON knowledge")
    op.execute("DROP FUNCTION IF EXISTS knowledge_terms_keep()")
    op.execute("DROP TABLE IF EXISTS knowledge_terms")
