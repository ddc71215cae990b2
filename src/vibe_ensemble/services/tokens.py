"""Credentials: create (shown once), list, revoke, and authenticate a bearer token."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

import structlog

from vibe_ensemble.auth import tokens
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import (
    DatabaseRestoring,
    DatabaseUnavailable,
    InvalidInput,
    MissingCredentials,
    NotFound,
    RateLimited,
    StorageFull,
    Unauthenticated,
)
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Credential
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service, ServiceContext, TimedCache
from vibe_ensemble.store import audit as audit_store
from vibe_ensemble.store import credentials as store
from vibe_ensemble.store import faults
from vibe_ensemble.store import projects as project_store
from vibe_ensemble.store import sessions as session_store
from vibe_ensemble.store.credentials import StoredCredential

log = structlog.get_logger(__name__)

TOOL_PROFILES = ("core", "full")
AUTH_FAILURE = "auth_failure"  # the rate-limit class of failed authentications, keyed by client address


def _unusable(stored: StoredCredential | None, now: datetime) -> str:
    """Why a credential cannot be used now ("unknown token", "revoked token", …), or "" when it can."""
    if stored is None:
        return "unknown token"
    if stored.credential.revoked_at is not None:
        return "revoked token"
    expires_at = stored.credential.expires_at
    if expires_at is not None and expires_at <= now:
        return "expired token"
    return ""


# How precisely `last_used_at` follows a credential's uses: it is written when the last use on record
# is older than this, so at most once a minute a credential (and replica), not at every request.
USE_RESOLUTION_S = 60.0

# While the database is unreachable, a token verified against it within the last RECENT_S seconds is
# still accepted, so a connected agent gets a clear `[database_unavailable] … retry in N s` tool error
# instead of a refused request. The bound on revocation: a token revoked on another replica keeps
# working here for at most RECENT_S seconds, and only while the database is down (when it is up, a
# token is checked against it at least every VIBE_CREDENTIAL_CACHE_S). At most RECENT_MAX tokens are
# remembered (the least recently verified are forgotten first); expiry is still enforced.
RECENT_S = 60.0
RECENT_MAX = 10_000
# How long a remembered token's re-check waits for the database (PostgreSQL) before the database is
# taken for down and the token as remembered: its read is one indexed row, answered in a millisecond.
RECHECK_S = 2.0


class RecentCredentials:
    """Callers verified recently, by token hash: a fallback for the duration of a database outage."""

    def __init__(self, ttl_s: float = RECENT_S, max_entries: int = RECENT_MAX) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Caller, datetime | None]] = OrderedDict()

    def remember(self, token_hash: str, caller: Caller, expires_at: datetime | None) -> None:
        self._entries[token_hash] = (time.monotonic(), caller, expires_at)
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def recall(self, token_hash: str, now: datetime) -> Caller | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        verified_at, caller, expires_at = entry
        if time.monotonic() - verified_at > self.ttl_s or (expires_at is not None and expires_at <= now):
            del self._entries[token_hash]
            return None
        return caller

    def forget(self, credential_id: int) -> None:
        for key in [k for k, (_, c, _) in self._entries.items() if c.credential_id == credential_id]:
            del self._entries[key]


def _checked_arguments(
    caller: Caller, label: str, project: str | None, agent: str | None, tool_profile: str | None
) -> tuple[str, str | None]:
    """The label and agent of a new token, checked (no database needed); refused as `create` refuses."""
    caller.require(Op.TOKEN_ADMIN)
    label = rules.line("label", label, max_len=rules.MAX_LINE, required=False)
    if tokens.holds_token(label):  # a label is shown in token lists and the event feed, in clear
        raise InvalidInput("label", "must not contain a token (labels are shown to all who list tokens)")
    if agent is not None:
        agent = rules.agent_name("agent", agent)  # a token bound to `system` could never act
        if project is None:
            raise InvalidInput(
                "project", "an agent-bound token needs a project (agent names are per project)"
            )
    if tool_profile is not None and tool_profile not in TOOL_PROFILES:
        raise InvalidInput("tool_profile", f"must be one of {', '.join(TOOL_PROFILES)}")
    return label, agent


def _checked_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is not None:
        expires_at = rules.moment("expires_at", expires_at)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at", "must be in the future")
    return expires_at


class TokenService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        # Recently verified credentials by token digest. Expiry is still checked on every use; revoking on
        # this process empties the cache at once, and on another replica takes effect within the
        # bound. Failures are never cached.
        self.cache: TimedCache[str, StoredCredential] = TimedCache(ctx.credential_cache_s)
        self.recent = RecentCredentials()
        self._marking: dict[int, asyncio.Task[None]] = {}  # uses being written down (`_used`)

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
        label, agent = _checked_arguments(caller, label, project, agent, tool_profile)
        secret = tokens.generate()
        async with self.write() as tx:
            expires_at = _checked_expiry(expires_at, tx.now)
            project_id = None
            if project is not None:
                project_id = (await project_store.by_slug(tx.conn, project)).id
            cred_id = await store.insert(
                tx.conn,
                prefix=tokens.display_prefix(secret),
                token_hash=tokens.digest(secret),
                label=label,
                role=role,
                project_id=project_id,
                agent=agent,
                tool_profile=tool_profile,
                expires_at=expires_at,
                now=tx.now,
            )
            created = await store.by_id(tx.conn, cred_id)
            assert created is not None  # inserted just above, in this transaction
            tx.emit(
                EventType.TOKEN_CREATED,
                caller.display,
                project_id,
                id=cred_id,
                role=role.value,
                label=label,
                agent=agent,
            )
            tx.audit(
                caller,
                "token.created",
                token_id=cred_id,
                token_role=role.value,
                project=project,
                agent=agent,
                label=label,
                expires_at=None if expires_at is None else expires_at.isoformat(),
            )
        return created.credential, secret

    async def check_create(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        label: str = "",
        expires_at: datetime | None = None,
        tool_profile: str | None = None,
    ) -> None:
        """Refuse what `create` would refuse, with the same errors, and write nothing (a dry run)."""
        _checked_arguments(caller, label, project, agent, tool_profile)
        async with self.read() as tx:
            _checked_expiry(expires_at, tx.now)
            if project is not None:
                await project_store.by_slug(tx.conn, project)

    async def list(self, caller: Caller) -> list[Credential]:
        caller.require(Op.TOKEN_ADMIN)
        async with self.snapshot() as conn:
            return await store.all_(conn)

    async def revoke(self, caller: Caller, token_id: int) -> Credential:
        caller.require(Op.TOKEN_ADMIN)
        async with self.write() as tx:
            found = await store.by_id(tx.conn, token_id)
            if found is None:
                raise NotFound(f"token {token_id} does not exist", id=token_id)
            label = found.credential.label
            if found.credential.revoked_at is None:
                await store.revoke(tx.conn, token_id, tx.now)
                tx.emit(EventType.TOKEN_REVOKED, caller.display, found.project_id, id=token_id, label=label)
                self.recent.forget(token_id)
                tx.audit(caller, "token.revoked", token_id=token_id, label=label)
            found = await store.by_id(tx.conn, token_id)
            assert found is not None  # it existed above, in this transaction
        self.cache.clear()
        return found.credential

    async def count(self) -> int:
        async with self.snapshot() as conn:
            return await store.count(conn)

    async def authenticate(self, token: str, *, remote: str = "", throttle: bool = True) -> Caller:
        """The caller a bearer token stands for; every failure is the same `Unauthenticated`.

        Failures are audited (and limited per client address: past the limit they are
        refused with `RateLimited` and no longer written down). With `throttle`, the
        credential's own rate limit is applied too (see `throttle`).
        """
        reason = "malformed token" if token else "missing token"
        found = None
        if tokens.looks_like_token(token):
            wanted = tokens.digest(token)
            found = self.cache.get(wanted)
            from_database = found is None
            generation = self.cache.generation  # a revocation here while the read is under way: not kept
            if from_database:
                # A token verified recently is taken as remembered while the database is known to be
                # down, and otherwise re-checked within RECHECK_S: asking a hung database for it
                # would spend the request's whole bound on the token, and its own transaction
                # another (25 s, where 15 s are promised).
                remembered = self.recent.recall(wanted, self.ctx.clock())
                known = remembered if faults.FAULTS.unreachable else None
                try:
                    if known is None:
                        async with self.snapshot(bound_s=RECHECK_S if remembered else None) as conn:
                            found = await store.by_hash(conn, wanted)
                except DatabaseRestoring:
                    raise  # what is remembered may be what the restore is about to revoke again
                except DatabaseUnavailable:
                    known = remembered
                    if known is None:
                        raise
                if known is not None:
                    caller = replace(known, remote=remote)
                    if throttle:
                        self.throttle(caller)
                    return caller
                if found is not None and not tokens.same(found.token_hash, wanted):
                    found = None
            reason = _unusable(found, self.ctx.clock())
            if from_database and not reason and found is not None:
                self._used(found.credential)
                # Only a read from the database starts a bound: a hit must not extend its own trust.
                self.cache.put_unless_cleared(wanted, found, generation)
                self.recent.remember(
                    wanted, self._caller(found, "", throttle=False), found.credential.expires_at
                )
        if reason or found is None:
            credential_id = None if found is None else found.credential.id
            await self._failed(reason, token, remote, credential_id=credential_id)
            refusal = Unauthenticated if token else MissingCredentials
            raise refusal(
                ("invalid, expired or revoked token" if token else "missing bearer token")
                + ": send 'Authorization: Bearer vibe_…' with a live token "
                "(an admin creates one with `vibe-ensemble token create --role worker`, or another "
                "--role: admin, coordinator, worker, viewer)"
            )
        return self._caller(found, remote, throttle)

    async def authenticate_session(
        self, credential_id: int, session_hash: str, *, remote: str = "", throttle: bool = True
    ) -> Caller:
        """The caller a dashboard session stands for: its credential, looked up again on every request,
        so a revoked or expired token ends its sessions at once, and a session ended by a logout
        (`end_session`, by the SHA-256 of its cookie) stays ended, copies of the cookie too.
        Failures are audited like `authenticate`.
        """
        async with self.snapshot() as conn:
            found = await store.by_id(conn, credential_id, authenticating=True)
            ended = await session_store.ended(conn, session_hash)
        reason = _unusable(found, self.ctx.clock())
        if reason or found is None:
            article = "an" if reason[0] in "aeiou" else "a"
            await self._failed(f"session of {article} {reason}", "", remote, credential_id=credential_id)
            raise Unauthenticated("the session's token is invalid, expired or revoked; log in again")
        if ended:
            await self._failed("session ended by a logout", "", remote, credential_id=credential_id)
            raise Unauthenticated("the session was ended by a logout; log in again")
        self._used(found.credential)
        return self._caller(found, remote, throttle)

    def _used(self, credential: Credential) -> None:
        """Write down that the credential was used (`last_used_at`, what `token list` shows), when its
        last use on record is older than USE_RESOLUTION_S: at most one write a credential a minute on
        each replica, beside the request rather than in its way."""
        now = self.ctx.clock()
        last = credential.last_used_at
        if last is not None and (now - last).total_seconds() < USE_RESOLUTION_S:
            return
        if credential.id in self._marking:
            return
        # Beside the request, not part of it: none of its context (its log fields, its place in the
        # app's gate, which a write that waits on the disk would give up while the request works).
        task = asyncio.create_task(
            self._mark_used(credential.id), name="vibe-token-used", context=contextvars.Context()
        )
        self._marking[credential.id] = task
        task.add_done_callback(lambda _: self._marking.pop(credential.id, None))

    async def settle(self) -> None:
        """Let the uses being written down finish (before the database is closed)."""
        if self._marking:
            await asyncio.gather(*self._marking.values(), return_exceptions=True)

    async def _mark_used(self, credential_id: int) -> None:
        try:
            async with self.write() as tx:
                await store.mark_used(tx.conn, credential_id, tx.now)
        except Exception as exc:  # a use not written down fails no request; the next use tries again
            log.info("token_use_not_recorded", credential_id=credential_id, error=type(exc).__name__)

    async def end_session(self, caller: Caller, session_hash: str, expires_at: datetime) -> None:
        """A logout: the session (its cookie's SHA-256) is refused from now on, on every replica, until
        it would have expired anyway; audited as `session.ended`."""
        assert caller.credential_id is not None  # a session always names a credential
        async with self.write() as tx:
            await session_store.end(tx.conn, session_hash, caller.credential_id, expires_at, tx.now)
            tx.audit(caller, "session.ended")

    async def still_usable(self, caller: Caller) -> bool:
        """Whether the caller's credential is still neither revoked nor expired, read again now: for
        what a request holds open past its authentication (a held `wait_for_messages`)."""
        if caller.credential_id is None:  # the server itself
            return True
        async with self.snapshot() as conn:
            found = await store.by_id(conn, caller.credential_id)
        return not _unusable(found, self.ctx.clock())

    def _caller(self, stored: StoredCredential, remote: str, throttle: bool) -> Caller:
        cred = stored.credential
        caller = Caller(
            credential_id=cred.id,
            role=cred.role,
            project=cred.project,
            agent=cred.agent,
            label=cred.label or cred.prefix,
            tool_profile=stored.tool_profile,
            remote=remote,
            expires_at=cred.expires_at,
        )
        if throttle:
            self.throttle(caller)
        return caller

    def throttle(self, caller: Caller) -> None:
        """Spend one request of the caller's rate limit (per credential, per role); `RateLimited` when out."""
        if self.ctx.limiter is None or caller.credential_id is None:
            return
        wait = self.ctx.limiter.take(f"cred:{caller.credential_id}", caller.role.value)
        if wait > 0:
            role = caller.role.value
            raise RateLimited(f"rate limit of the {role} role reached: retry in {_seconds(wait)}", wait)

    async def _failed(self, reason: str, token: str, remote: str, credential_id: int | None) -> None:
        if self.ctx.limiter is not None:
            wait = self.ctx.limiter.take(f"addr:{remote}", AUTH_FAILURE)
            if wait > 0:
                raise RateLimited(f"too many failed authentications: retry in {_seconds(wait)}", wait)
        details: dict[str, object] = {"reason": reason, "credential_id": credential_id}
        if tokens.looks_like_token(token):
            details["prefix"] = tokens.display_prefix(token)
        entry = audit_store.NewAudit("anonymous", "auth.failed", "failed", remote, tokens.scrub(details))
        try:
            async with self.write() as tx:
                await audit_store.append(tx.conn, tx.now, [entry])
        except (DatabaseUnavailable, StorageFull):
            # Nothing can be written down now; the refusal stands (a request with no token, or a
            # malformed one, is refused as such, not told the database is unavailable).
            log.warning("auth_failure_not_audited", reason=reason, remote=remote)


def _seconds(wait: float) -> str:
    """A wait as a person reads it: tenths of a second, rounded up, never "0.0s"."""
    return f"{math.ceil(wait * 10) / 10:.1f}s"
