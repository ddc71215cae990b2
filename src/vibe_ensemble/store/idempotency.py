"""Idempotency keys: the first result of an operation, replayed to a retry with the same key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import idempotency_keys

KEEP = timedelta(hours=24)


def _key(project_id: int, agent_id: int, operation: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        idempotency_keys.c.project_id == project_id,
        idempotency_keys.c.agent_id == agent_id,
        idempotency_keys.c.operation == operation,
        idempotency_keys.c.key == key,
    )


async def load(
    conn: Connection, project_id: int, agent_id: int, operation: str, key: str, now: datetime
) -> dict[str, Any] | None:
    """The stored response for this key, unless it is older than KEEP."""
    row = (
        await conn.execute(
            sa.select(idempotency_keys.c.response, idempotency_keys.c.created_at).where(
                _key(project_id, agent_id, operation, key)
            )
        )
    ).first()
    if row is None or row.created_at <= now - KEEP:
        return None
    response: dict[str, Any] = row.response
    return response


async def save(
    conn: Connection,
    project_id: int,
    agent_id: int,
    operation: str,
    key: str,
    response: dict[str, Any],
    now: datetime,
) -> None:
    """Store the response (replacing a stale one), and forget this agent's keys older than KEEP."""
    await conn.execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.project_id == project_id,
            idempotency_keys.c.agent_id == agent_id,
            sa.or_(idempotency_keys.c.created_at <= now - KEEP, _key(project_id, agent_id, operation, key)),
        )
    )
    await conn.execute(
        idempotency_keys.insert().values(
            project_id=project_id,
            agent_id=agent_id,
            operation=operation,
            key=key,
            response=response,
            created_at=now,
        )
    )
