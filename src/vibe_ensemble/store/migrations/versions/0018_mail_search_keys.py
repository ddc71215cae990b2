"""PostgreSQL: mail search's index step reads the project's matches only.

A search finds the project's newest matches by walking its newest mail, then, for a word too rare
there, through a GIN index. That index was over `search` (0006), every project's words: a word the
project's mail lacks but other projects' mail holds often cost a read of all their matches (586 ms
where 100,000 hold it, at 1,000,000 messages). Now the index is over `vibe_mail_keys(project_id,
search)`, each word keyed by its message's project (`store/mail_search.keys_ddl`), and 0006's index,
which nothing else reads, is dropped. Building the index reads every message once: 18 s for
1,000,000 messages on a 2-core machine, with writes to messages waiting meanwhile. SQLite is
unchanged.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

from alembic import op

from vibe_ensemble.store.mail_search import drop_keys_ddl, keys_ddl

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in keys_ddl():
        op.execute(statement)
    op.execute("DROP INDEX IF EXISTS ix_messages_search")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX ix_messages_search ON messages USING GIN (search)")
    for statement in drop_keys_ddl():
        op.execute(statement)
