"""Credentials (API tokens), stored only as a hash of the secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import TokenRole, by_value
from vibe_ensemble.domain.errors import DatabaseRestoring
from vibe_ensemble.domain.models import Credential
from vibe_ensemble.store import locks
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared
from vibe_ensemble.store.tables import credentials, projects

_ROLES = by_value(TokenRole)


@dataclass(frozen=True)
class StoredCredential:
    """A credential with what only the server sees: its hash, project id and tool profile."""

    credential: Credential
    token_hash: str
    project_id: int | None
    tool_profile: str | None


def _select() -> sa.Select[Any]:
    return sa.select(credentials, projects.c.slug).outerjoin(
        projects, projects.c.id == credentials.c.project_id
    )


def _to_stored(row: sa.Row[Any]) -> StoredCredential:
    credential = Credential(
        id=row.id,
        prefix=row.prefix,
        label=row.label,
        role=_ROLES[row.role],
        project=row.slug,
        agent=row.agent_name,
        tool_profile=row.tool_profile,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
    return StoredCredential(credential, row.token_hash, row.project_id, row.tool_profile)


async def insert(
    conn: Connection,
    *,
    prefix: str,
    token_hash: str,
    label: str,
    role: TokenRole,
    project_id: int | None,
    agent: str | None,
    tool_profile: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> int:
    result = await conn.execute(
        credentials.insert()
        .values(
            prefix=prefix,
            token_hash=token_hash,
            label=label,
            role=role.value,
            project_id=project_id,
            agent_name=agent,
            tool_profile=tool_profile,
            created_at=now,
            expires_at=expires_at,
        )
        .returning(credentials.c.id)
    )
    return int(result.scalar_one())


# PostgreSQL: whether no restore is replacing the database (store/locks.py RESTORE), asked in the
# statement that reads the credential, so the answer and the row go together. A restore holds the key
# from before `pg_restore` commits until what it carries over (revocations, logouts) has: a credential
# read in between could find a token revoked since the backup valid again, and trust it for the cache's
# lifetime. The shared lock is the statement's own, released as it ends.
_NO_RESTORE = sa.func.pg_try_advisory_xact_lock_shared(sa.literal(locks.RESTORE, sa.BigInteger)).label(
    "no_restore"
)


async def by_id(
    conn: Connection, credential_id: int, *, authenticating: bool = False
) -> StoredCredential | None:
    """The credential, or None. `authenticating`: raises `DatabaseRestoring` while a restore is
    replacing the database (see `_NO_RESTORE`)."""
    return await _one(conn, _select().where(credentials.c.id == credential_id), authenticating)


async def by_hash(conn: Connection, token_hash: str) -> StoredCredential | None:
    """The credential with this token hash, for an authentication: raises `DatabaseRestoring` while a
    restore is replacing the database (see `_NO_RESTORE`)."""
    return await _one(conn, _select().where(credentials.c.token_hash == token_hash), True)


async def _one(conn: Connection, statement: sa.Select[Any], authenticating: bool) -> StoredCredential | None:
    checked = authenticating and conn.dialect.name == "postgresql"  # a SQLite restore swaps in one step
    row = (await conn.execute(statement.add_columns(_NO_RESTORE) if checked else statement)).first()
    if row is None:
        return None
    if checked and not row.no_restore:
        raise DatabaseRestoring()
    return _to_stored(row)


async def all_(conn: Connection) -> list[Credential]:
    """Every credential, oldest first."""
    return [_to_stored(r).credential for r in await conn.execute(_select().order_by(credentials.c.id))]


async def revoke(conn: Connection, credential_id: int, now: datetime) -> None:
    await conn.execute(credentials.update().where(credentials.c.id == credential_id).values(revoked_at=now))


_MARK_USED = Prepared(
    credentials.update()
    .where(credentials.c.id == sa.bindparam("id"))
    .values(last_used_at=sa.bindparam("now"))
)


async def mark_used(conn: Connection, credential_id: int, now: datetime) -> None:
    await conn.execute(_MARK_USED, {"id": credential_id, "now": now})


async def count(conn: Connection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(credentials))).scalar_one())
