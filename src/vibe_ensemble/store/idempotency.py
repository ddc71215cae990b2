"""Idempotency keys: the first result of an operation, replayed to a retry with the same key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, first_record
from vibe_ensemble.store.tables import idempotency_keys

KEEP = timedelta(hours=24)

_THIS_KEY = sa.and_(
    idempotency_keys.c.project_id == sa.bindparam("project_id"),
    idempotency_keys.c.agent_id == sa.bindparam("agent_id"),
    idempotency_keys.c.operation == sa.bindparam("operation"),
    idempotency_keys.c.key == sa.bindparam("key"),
)

_LOAD = Prepared(sa.select(idempotency_keys.c.response, idempotency_keys.c.created_at).where(_THIS_KEY))


async def load(
    conn: Connection, project_id: int, agent_id: int, operation: str, key: str, now: datetime
) -> dict[str, Any] | None:
    """The stored response for this key, unless it is older than KEEP."""
    parameters = {"project_id": project_id, "agent_id": agent_id, "operation": operation, "key": key}
    row = first_record(await conn.execute(_LOAD, parameters))
    if row is None or row.created_at <= now - KEEP:
        return None
    response: dict[str, Any] = row.response
    return response


# This key's row, and the agent's rows older than KEEP (`stale`: now - KEEP).
_FORGET = Prepared(
    idempotency_keys.delete().where(
        idempotency_keys.c.project_id == sa.bindparam("project_id"),
        idempotency_keys.c.agent_id == sa.bindparam("agent_id"),
        sa.or_(idempotency_keys.c.created_at <= sa.bindparam("stale"), _THIS_KEY),
    )
)
_SAVE = Prepared(
    idempotency_keys.insert().values(
        project_id=sa.bindparam("project_id"),
        agent_id=sa.bindparam("agent_id"),
        operation=sa.bindparam("operation"),
        key=sa.bindparam("key"),
        response=sa.bindparam("response"),
        created_at=sa.bindparam("now"),
    )
)


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
    parameters = {"project_id": project_id, "agent_id": agent_id, "operation": operation, "key": key}
    await conn.execute(_FORGET, {**parameters, "stale": now - KEEP})
    await conn.execute(_SAVE, {**parameters, "response": response, "now": now})
