"""PostgreSQL: events are given their ids after their transactions commit, not inside COMMIT.

Since 0008 a deferred trigger gave each event its id inside its transaction's COMMIT, under the
event-order lock, and sent its NOTIFY. Both the lock and the NOTIFY's queue lock are held until
the commit is durable, so every write that carried an event waited for the one before it to
flush its WAL: at 10 agents, sends queued behind each other's commits. Now an event is
committed with its provisional id, which readers skip, and `vibe_events_order_pending()`
(`store/events.order_pending_ddl`), run by each replica's sequencer (events/sequencer.py), gives
every committed event its id in one short transaction under the lock, and sends one NOTIFY.
Writers' commits take no lock of the event log and flush together. Events committed before the
upgrade were already given their ids; any left with a provisional id are given theirs by the
first call, as are those of a replica of the previous release still running meanwhile (its
writes are ordered by this release's replicas, within a second). SQLite is unchanged.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

from alembic import op

from vibe_ensemble.store.events import (
    ORDER_PENDING_FUNCTION,
    drop_order_at_commit_ddl,
    drop_order_pending_ddl,
    events_sequence,
    order_at_commit_ddl,
    order_pending_ddl,
)

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    ordering = order_pending_ddl(events_sequence(op.get_bind()), index_scan=False)
    for statement in drop_order_at_commit_ddl(keep_sequence=True) + ordering:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"SELECT {ORDER_PENDING_FUNCTION}()")  # none left waiting: the trigger orders new ones only
    for statement in drop_order_pending_ddl() + order_at_commit_ddl(events_sequence(op.get_bind())):
        op.execute(statement)
