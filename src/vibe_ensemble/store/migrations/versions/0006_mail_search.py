"""Full-text search of mail, and the project's mail newest first.

SQLite: each project gets its FTS5 table over its messages (subject, body) and the triggers that
keep it (`store/mail_search.py`), filled with the mail it already has; projects made later get
theirs with the project. PostgreSQL: a generated `search` tsvector on messages (subject weight A,
body B) with a GIN index. Both: an index on messages (project_id, id), which the thread list
walks newest first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 07:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vibe_ensemble.store.mail_search import PREFIX, backfill, ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_project_id_id"), ["project_id", "id"], unique=False)
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for (project_id,) in bind.execute(sa.text("SELECT id FROM projects")):
            for statement in ddl(int(project_id)):
                op.execute(statement)
            op.execute(backfill(int(project_id)))
        return
    op.execute(
        "ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS ("
        "setweight(to_tsvector('english', coalesce(subject, '')), 'A') || "
        "setweight(to_tsvector('english', coalesce(body, '')), 'B')) STORED"
    )
    op.execute("CREATE INDEX ix_messages_search ON messages USING GIN (search)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        names = bind.execute(sa.text("SELECT name, type FROM sqlite_master")).all()
        for name, kind in names:
            if kind == "trigger" and name.startswith(PREFIX):
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for name, kind in names:
            if kind == "table" and name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
                op.execute(f"DROP TABLE IF EXISTS {name}")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_search")
        op.execute("ALTER TABLE messages DROP COLUMN IF EXISTS search")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_project_id_id"))
