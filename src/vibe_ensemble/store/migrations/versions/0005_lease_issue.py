"""A lease may name the issue it serves: reservations.issue_id (nullable; cleared if the issue goes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("issue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_reservations_issue_id_issues"), "issues", ["issue_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index(batch_op.f("ix_reservations_issue_id"), ["issue_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_issue_id"))
        batch_op.drop_constraint(batch_op.f("fk_reservations_issue_id_issues"), type_="foreignkey")
        batch_op.drop_column("issue_id")
