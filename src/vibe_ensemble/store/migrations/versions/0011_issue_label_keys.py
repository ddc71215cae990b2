"""Issues keep their labels' case folds, so labels match capabilities and the label filter whatever
their letter case, in SQL, alike on both databases.

`claim_issue` without an id prefers issues labelled with the agent's capabilities, and `list_issues`
filters by a label: both compared labels exactly as written, so an agent with the capability
`Python` passed over an issue labelled `python`. Neither database folds case as Python does
(SQLite's `lower` is ASCII only; PostgreSQL's depends on the database's locale, and folds `ß` to
nothing), so the folds (`str.casefold`) are written beside the labels whenever the labels are, and
the queries compare those. Issues written before this revision get theirs here.

During a rolling upgrade the release before this one still writes issues without keys: the column
is nullable, and an issue without keys is matched by its labels as written (as that release matched
them) until its labels are next written by this release.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BATCH = 1000


def _keys(labels: Any) -> list[str]:
    if isinstance(labels, str):  # SQLite's JSON read through a plain table: its text
        labels = json.loads(labels)
    return list(dict.fromkeys(str(label).casefold() for label in labels or []))


def upgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label_keys", JSONType, nullable=True))
    issues = sa.table("issues", sa.column("id", sa.BigInteger), sa.column("labels", JSONType))
    keyed = sa.table("issues", sa.column("id", sa.BigInteger), sa.column("label_keys", JSONType))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(issues.c.id, issues.c.labels)
            .where(issues.c.id > last)
            .order_by(issues.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            keyed.update()
            .where(keyed.c.id == sa.bindparam("row_id"))
            .values(label_keys=sa.bindparam("keys")),
            [{"row_id": row.id, "keys": _keys(row.labels)} for row in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_column("label_keys")
