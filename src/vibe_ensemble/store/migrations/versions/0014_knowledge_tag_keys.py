"""Knowledge entries keep their tags' case folds, so the tag filter matches whatever the letter case,
in SQL, alike on both databases (as issue labels do since 0011).

`search_knowledge` and `list_knowledge` filtered by tags exactly as written: an entry tagged
`Postgres` was not found under `postgres`, while an issue labelled `Python` is found under `python`.
The folds (`str.casefold`, domain/rules.label_keys) are written beside the tags whenever the tags
are, and the filter compares those. Entries written before this revision get theirs here; on SQLite
each UPDATE goes through the project's FTS5 triggers, which index the same text again.

During a rolling upgrade the release before this one still writes entries without keys: the column
is nullable, and an entry without keys is matched by its tags as written (as that release matched
them) until its tags are next written by this release.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 08:00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BATCH = 1000


def _keys(tags: Any) -> list[str]:
    if isinstance(tags, str):  # SQLite's JSON read through a plain table: its text
        tags = json.loads(tags)
    return list(dict.fromkeys(str(tag).casefold() for tag in tags or []))


def upgrade() -> None:
    with op.batch_alter_table("knowledge", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tag_keys", JSONType, nullable=True))
    entries = sa.table("knowledge", sa.column("id", sa.BigInteger), sa.column("tags", JSONType))
    keyed = sa.table("knowledge", sa.column("id", sa.BigInteger), sa.column("tag_keys", JSONType))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(entries.c.id, entries.c.tags)
            .where(entries.c.id > last)
            .order_by(entries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            keyed.update().where(keyed.c.id == sa.bindparam("row_id")).values(tag_keys=sa.bindparam("keys")),
            [{"row_id": row.id, "keys": _keys(row.tags)} for row in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("knowledge", schema=None) as batch_op:
        batch_op.drop_column("tag_keys")
