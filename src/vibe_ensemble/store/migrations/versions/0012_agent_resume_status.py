"""An agent the presence sweep sets offline keeps the status it had, to return to when it is heard
from again.

Until this revision an agent back from offline (a heartbeat without a status, as a client's hook
sends) became `idle`, whatever it had said before (`working`, `blocked`): its issue in progress
looked abandoned. The sweep now writes the status it replaces here; a call of the agent, or a
heartbeat without a status, brings that status back.

During a rolling upgrade the release before this one may still run the sweep: an agent it sets
offline has no status kept (NULL), and comes back `idle`, as it did under that release.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resume_status", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("resume_status")
