"""The audit log: append-only records of security-relevant acts, read newest first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.models import AuditEntry
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import audit_log

# An audit row's size is bounded whatever a caller sends: a refused call's arguments end up in
# `details`, at the caller's request rate.
MAX_VALUE_CHARS = 500
MAX_ITEMS = 50
MAX_DEPTH = 4


def bounded(value: Any, depth: int = 0) -> Any:
    """`value` (JSON-like) with long strings cut, long lists and dicts shortened and deep nesting
    flattened; each cut says how big the original was."""
    if isinstance(value, str):
        if len(value) <= MAX_VALUE_CHARS:
            return value
        return f"{value[:MAX_VALUE_CHARS]}… [truncated from {len(value)} characters]"
    if isinstance(value, dict | list | tuple) and depth >= MAX_DEPTH:
        return f"[nested {type(value).__name__} of {len(value)} items omitted]"
    if isinstance(value, dict):
        out = {bounded(str(k), depth + 1): bounded(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
        if len(value) > MAX_ITEMS:
            out["…"] = f"[{len(value) - MAX_ITEMS} more keys of {len(value)} omitted]"
        return out
    if isinstance(value, list | tuple):
        items = [bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"[{len(value) - MAX_ITEMS} more items of {len(value)} omitted]")
        return items
    return value


@dataclass
class NewAudit:
    actor: str
    action: str
    outcome: str
    remote: str
    details: dict[str, Any]


async def append(conn: Connection, now: datetime, entries: Sequence[NewAudit]) -> None:
    if not entries:
        return
    await conn.execute(
        audit_log.insert(),
        [
            {
                "time": now,
                "actor": e.actor[:200],
                "action": e.action[:64],
                "outcome": e.outcome[:16],
                "remote": e.remote[:200],
                "details": bounded(e.details),
            }
            for e in entries
        ],
    )


def _to_entry(row: sa.Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        time=row.time,
        actor=row.actor,
        action=row.action,
        outcome=row.outcome,
        remote=row.remote,
        details=row.details,
    )


async def page(
    conn: Connection,
    *,
    before: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries newest first; `action` ending in `.*` matches a family (`auth.*`)."""
    q = sa.select(audit_log)
    if before is not None:
        q = q.where(audit_log.c.id < before)
    if action:
        if action.endswith(".*"):
            q = q.where(audit_log.c.action.startswith(action[:-1], autoescape=True))
        else:
            q = q.where(audit_log.c.action == action)
    if actor:
        q = q.where(audit_log.c.actor == actor)
    if outcome:
        q = q.where(audit_log.c.outcome == outcome)
    if since is not None:
        q = q.where(audit_log.c.time >= since)
    rows = await conn.execute(q.order_by(audit_log.c.id.desc()).limit(limit))
    return [_to_entry(r) for r in rows]
