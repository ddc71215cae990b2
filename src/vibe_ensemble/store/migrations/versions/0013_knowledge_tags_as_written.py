"""SQLite: knowledge tags stored as written, so a tag with a letter outside ASCII is found by search.

FTS5 indexes an entry's tags as their JSON text (store/knowledge_rank.py). SQLAlchemy wrote JSON
ASCII-escaped, so the tag `café` was the text `["caf\\u00e9"]`, the words `caf` and `u00e9`, and a
search for `café` (or `名古屋`) never found it, while PostgreSQL did. The server now writes JSON as
written (store/sqlite.py); here the older rows' tags are rewritten the same way. Each UPDATE goes
through the project's FTS5 triggers, which take the old text out of the index and put the new one in.
PostgreSQL (JSONB, a tsvector of the decoded tags) is not touched.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 11:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    last = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, tags FROM knowledge WHERE id > :last AND tags LIKE '%\\u%' ESCAPE '!' "
                "ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            break
        rewritten = [
            {"row_id": row.id, "tags": json.dumps(json.loads(row.tags), ensure_ascii=False)} for row in rows
        ]
        conn.execute(
            sa.text("UPDATE knowledge SET tags = :tags WHERE id = :row_id AND tags IS NOT :tags"),
            rewritten,
        )
        last = rows[-1].id


def downgrade() -> None:
    """Nothing to undo: escaped or not, the JSON is the same value."""
