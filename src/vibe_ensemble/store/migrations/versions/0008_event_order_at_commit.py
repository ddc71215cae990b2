"""PostgreSQL: each event's id is given as its transaction commits, by a deferred trigger.

Readers follow the event log by id, so ids must become visible in id order. Until now every
transaction that appended an event took an advisory lock at the append and held it to the end of
its COMMIT: across the append's answer, a turn of the server's event loop and the COMMIT's round
trip, so writers on all replicas waited for each other's loop (4.6 ms an append at 10 agents).
Now the event is inserted with a provisional id and a deferred constraint trigger, run inside
COMMIT, takes the lock, renumbers the row from the same sequence and sends the NOTIFY
(`store/events.order_at_commit_ddl`). SQLite is unchanged: one writer draws ids in commit order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vibe_ensemble.store.events import drop_order_at_commit_ddl, order_at_commit_ddl

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence('events', 'id')")).scalar_one()
    for statement in order_at_commit_ddl(sequence):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in drop_order_at_commit_ddl():
        op.execute(statement)
