"""Knowledge search on SQLite: one FTS5 table per project instead of one for all projects.

bm25 reads its statistics from the whole FTS5 table; with one table per project they are the
project's own, and FTS5 ranks inside SQLite (`store/knowledge_rank.py`). Projects that have
entries get their table and triggers here; others get theirs with their first entry.
PostgreSQL is unchanged (ts_rank reads only the row).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vibe_ensemble.store.knowledge_rank import PREFIX, ddl, table_name

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_GLOBAL_TRIGGERS = ("knowledge_fts_ai", "knowledge_fts_ad", "knowledge_fts_au")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for trigger in _GLOBAL_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS knowledge_fts")
    projects = [int(p) for (p,) in bind.execute(sa.text("SELECT DISTINCT project_id FROM knowledge"))]
    for project_id in projects:
        for statement in ddl(project_id, narrowing=False):  # the kind and tag keys came with 0016
            op.execute(statement)
        op.execute(
            f"INSERT INTO {table_name(project_id)}(rowid, title, body, tags) "  # noqa: S608  # nosec B608
            f"SELECT id, title, body, tags FROM knowledge WHERE project_id = {project_id}"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    triggers = bind.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
    for name in triggers:
        if name.startswith(PREFIX):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    names = bind.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
    for name in names:
        if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
            op.execute(f"DROP TABLE IF EXISTS {name}")
    op.execute(
        "CREATE VIRTUAL TABLE knowledge_fts USING fts5("
        "title, body, tags, content='knowledge', content_rowid='id', tokenize='porter unicode61')"
    )
    op.execute(
        "CREATE TRIGGER knowledge_fts_ai AFTER INSERT ON knowledge BEGIN "
        "INSERT INTO knowledge_fts(rowid, title, body, tags) "
        "VALUES (new.id, new.title, new.body, new.tags); END"
    )
    op.execute(
        "CREATE TRIGGER knowledge_fts_ad AFTER DELETE ON knowledge BEGIN "
        "INSERT INTO knowledge_fts(knowledge_fts, rowid, title, body, tags) "
        "VALUES ('delete', old.id, old.title, old.body, old.tags); END"
    )
    op.execute(
        "CREATE TRIGGER knowledge_fts_au AFTER UPDATE ON knowledge BEGIN "
        "INSERT INTO knowledge_fts(knowledge_fts, rowid, title, body, tags) "
        "VALUES ('delete', old.id, old.title, old.body, old.tags); "
        "INSERT INTO knowledge_fts(rowid, title, body, tags) "
        "VALUES (new.id, new.title, new.body, new.tags); END"
    )
    op.execute("INSERT INTO knowledge_fts(knowledge_fts) VALUES ('rebuild')")
