"""Each message keeps the names it was sent to, written once when it is sent.

An inbox page showed each message's recipients by a subquery per row (the message's recipient rows
joined to their agents, names aggregated): on PostgreSQL half of a `fetch_inbox`'s execution, on
SQLite 3% of a whole tool call's instructions. A message's recipients never change after it is
sent and an agent is never renamed, so the names are written with the message; messages sent
before this revision get theirs here, from the same recipient rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 22:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_names", sa.Text(), nullable=False, server_default=""))
    messages = sa.table("messages", sa.column("id", sa.BigInteger), sa.column("recipient_names", sa.Text))
    recipients = sa.table("message_recipients", sa.column("message_id", sa.BigInteger), sa.column("agent_id"))
    agents = sa.table("agents", sa.column("id", sa.BigInteger), sa.column("name", sa.String))
    names = (
        sa.select(sa.func.aggregate_strings(agents.c.name, ","))
        .select_from(recipients.join(agents, agents.c.id == recipients.c.agent_id))
        .where(recipients.c.message_id == messages.c.id)
        .scalar_subquery()
    )
    op.execute(messages.update().values(recipient_names=sa.func.coalesce(names, "")))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("recipient_names")
