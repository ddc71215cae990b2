"""Whole-server counts for /metrics: issues and agents by status, live leases, unread mail.

Each is one aggregate query over a table (no per-project rows), run at most every few seconds
(services/stats.py caches them), never on a request's path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.reservations import live
from vibe_ensemble.store.tables import agents, issues, message_recipients, reservations


async def issues_by_status(conn: Connection) -> dict[str, int]:
    return _counts(await conn.execute(sa.select(issues.c.status, sa.func.count()).group_by(issues.c.status)))


async def agents_by_status(conn: Connection) -> dict[str, int]:
    """Agents not retired, by status."""
    query = (
        sa.select(agents.c.status, sa.func.count())
        .where(agents.c.retired_at.is_(None))
        .group_by(agents.c.status)
    )
    return _counts(await conn.execute(query))


async def live_leases(conn: Connection, now: datetime) -> int:
    query = sa.select(sa.func.count()).select_from(reservations).where(live(now))
    return int((await conn.execute(query)).scalar_one())


async def unread_mail(conn: Connection) -> int:
    """Deliveries not yet read (a message to three agents counts three times until each reads it)."""
    query = (
        sa.select(sa.func.count())
        .select_from(message_recipients)
        .where(message_recipients.c.read_at.is_(None))
    )
    return int((await conn.execute(query)).scalar_one())


def _counts(rows: Any) -> dict[str, int]:
    return {str(key): int(n) for key, n in rows}
