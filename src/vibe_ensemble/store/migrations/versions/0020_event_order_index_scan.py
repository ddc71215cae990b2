"""PostgreSQL: the event sequencer's round finds the waiting events by the primary key, always.

Each round (0017) looks for the committed events that still hold a provisional (negative) id. The
function's plan is made on a connection's first call, often before PostgreSQL has gathered the
event log's statistics (a new database, or a log that grew much since): it then read every row of
the log and sorted the few it found, each round reading more as the log grew. At 100,000 events
a round took 10.5 ms, against 1.0 ms reading the primary key backwards from 0; in bench/swarm.py's
runs on new databases, 0.32 to 0.38 ms against 0.28 to 0.29 (bench/RESULTS.md, forty-second round). Now
the function runs with sequential and bitmap scans off, its own settings restored as it returns
(`store/events.order_pending_ddl`). The upgrade replaces the function and nothing else. SQLite is
unchanged.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 23:40:00
"""

from __future__ import annotations

from alembic import op

from vibe_ensemble.store.events import events_sequence, order_pending_ddl

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in order_pending_ddl(events_sequence(op.get_bind()), index_scan=True):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in order_pending_ddl(events_sequence(op.get_bind()), index_scan=False):
        op.execute(statement)
