"""Indexes for the dashboard: mail awaiting acknowledgement, events by type, recently finished issues.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 21:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_ack_required",
            ["project_id", "created_at"],
            unique=False,
            sqlite_where=sa.text("ack_required"),
            postgresql_where=sa.text("ack_required"),
        )
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_issues_project_id_status_updated_at"),
            ["project_id", "status", "updated_at"],
            unique=False,
        )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_project_id_type_id"), ["project_id", "type", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_project_id_type_id"))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_ack_required")
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_issues_project_id_status_updated_at"))
