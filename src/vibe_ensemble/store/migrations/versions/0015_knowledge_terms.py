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

from vibe_ensemble.store.knowledge import DROP_TERMS, terms_ddl

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in terms_ddl(narrowing=False):  # the kind and tag keys came with 0016
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DROP_TERMS:
        op.execute(statement)
