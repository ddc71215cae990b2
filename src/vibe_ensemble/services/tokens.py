"""Credentials: create (shown once), list, revoke, and authenticate a bearer token."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.auth import tokens
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, Unauthenticated
from vibe_ensemble.domain.models import Credential
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import projects as project_store
from vibe_ensemble.store.tables import credentials, projects

TOOL_PROFILES = ("core", "full")


def _select() -> sa.Select[Any]:
    return sa.select(credentials, projects.c.slug).outerjoin(
        projects, projects.c.id == credentials.c.project_id
    )


def _to_credential(row: sa.Row[Any]) -> Credential:
    return Credential(
        id=row.id,
        prefix=row.prefix,
        label=row.label,
        role=TokenRole(row.role),
        project=row.slug,
        agent=row.agent_name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class TokenService(Service):
    async def create(
        self,
        caller: Caller,
        *,
        role: TokenRole,
        project: str | None = None,
        agent: str | None = None,
        label: str = "",
        expires_at: datetime | None = None,
        tool_profile: str | None = None,
    ) -> tuple[Credential, str]:
        """A new token; the secret is returned here once and never stored."""
        caller.require(Op.TOKEN_ADMIN)
        label = rules.text("label", label, max_len=200, required=False)
        if agent is not None:
            agent = rules.name("agent", agent)
            if project is None:
                raise InvalidInput(
                    "project", "an agent-bound token needs a project (agent names are per project)"
                )
        if tool_profile is not None and tool_profile not in TOOL_PROFILES:
            raise InvalidInput("tool_profile", f"must be one of {', '.join(TOOL_PROFILES)}")
        secret = tokens.generate()
        async with self.write() as tx:
            if expires_at is not None and expires_at <= tx.now:
                raise InvalidInput("expires_at", "must be in the future")
            project_id = None
            if project is not None:
                project_id = (await project_store.by_slug(tx.conn, project)).id
            result = await tx.conn.execute(
                credentials.insert()
                .values(
                    prefix=tokens.display_prefix(secret),
                    token_hash=tokens.digest(secret),
                    label=label,
                    role=role.value,
                    project_id=project_id,
                    agent_name=agent,
                    tool_profile=tool_profile,
                    created_at=tx.now,
                    expires_at=expires_at,
                )
                .returning(credentials.c.id)
            )
            cred_id = result.scalar_one()
            row = (await tx.conn.execute(_select().where(credentials.c.id == cred_id))).one()
            tx.emit(
                "token.created",
                caller.display,
                project_id,
                id=cred_id,
                role=role.value,
                label=label,
                agent=agent,
            )
        return _to_credential(row), secret

    async def list(self, caller: Caller) -> list[Credential]:
        caller.require(Op.TOKEN_ADMIN)
        async with self.ctx.db.read() as conn:
            rows = await conn.execute(_select().order_by(credentials.c.id))
            return [_to_credential(r) for r in rows]

    async def revoke(self, caller: Caller, token_id: int) -> Credential:
        caller.require(Op.TOKEN_ADMIN)
        async with self.write() as tx:
            row = (await tx.conn.execute(_select().where(credentials.c.id == token_id))).first()
            if row is None:
                raise NotFound(f"token {token_id} does not exist", id=token_id)
            if row.revoked_at is None:
                await tx.conn.execute(
                    credentials.update().where(credentials.c.id == token_id).values(revoked_at=tx.now)
                )
                tx.emit("token.revoked", caller.display, row.project_id, id=token_id, label=row.label)
            row = (await tx.conn.execute(_select().where(credentials.c.id == token_id))).one()
        return _to_credential(row)

    async def count(self) -> int:
        async with self.ctx.db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(credentials))).scalar_one())

    async def authenticate(self, token: str) -> Caller:
        """The caller a bearer token stands for; every failure is the same `Unauthenticated`."""
        if not tokens.looks_like_token(token):
            raise Unauthenticated("invalid or missing token")
        wanted = tokens.digest(token)
        async with self.ctx.db.read() as conn:
            row = (await conn.execute(_select().where(credentials.c.token_hash == wanted))).first()
        now = self.ctx.clock()
        if (
            row is None
            or not tokens.same(row.token_hash, wanted)
            or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
        ):
            raise Unauthenticated("invalid, expired or revoked token")
        return Caller(
            credential_id=row.id,
            role=TokenRole(row.role),
            project=row.slug,
            agent=row.agent_name,
            label=row.label or row.prefix,
            tool_profile=row.tool_profile,
        )
