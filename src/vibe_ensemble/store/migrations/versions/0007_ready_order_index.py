"""An index in the ready list's order: a project's issues by status, then priority, then id.

The ready issues are a project's open, unassigned issues with no unfinished dependency, best first
(priority, then age): `list_issues` with `ready`, a claim without an id, the heartbeat's and the
briefing's suggestions and the board's column read them in that order. With only (project_id,
status) to go by, the database read every open issue of the project and sorted them before taking
a page (10 ms at 25,000 issues a project); in this order it walks them best first and stops at the
page.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 03:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_issues_project_id_status_priority_id"),
            ["project_id", "status", "priority", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_issues_project_id_status_priority_id"))
