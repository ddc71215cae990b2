"""Leases on paths and named resources: atomic check-and-grant, release, read-only checks.

A decision is one write transaction that reads every live lease of the project
and inserts the granted ones. On SQLite the single writer serialises those
transactions; on PostgreSQL a per-project advisory lock, taken first, does. So
two exclusive holders of overlapping patterns can never both be granted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import ReserveMode
from vibe_ensemble.domain.errors import Conflict, InvalidInput
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import (
    LeaseConflict,
    PathCheck,
    ReleaseResult,
    Reservation,
    ReservationResult,
)
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.services.base import Service, Transaction
from vibe_ensemble.services.lease_conflicts import in_the_way, parse_patterns
from vibe_ensemble.store import idempotency, locks
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import reservations as store

DEFAULT_TTL_S = 1800
MIN_TTL_S = 10
MAX_TTL_S = 86_400
MAX_RESERVE_PATHS = 100
MAX_CHECK_PATHS = 1000
# check_paths' `files` flag, described alike at both doors
FILES_DOC = (
    "true: the paths are files (a commit's, an edit's): a lease conflicts only when it covers one of "
    "them, not because a path could also be a directory holding what the lease matches."
)
MAX_REASON = rules.MAX_NOTE
OPERATION = "reserve_paths"

_RESULT = TypeAdapter(ReservationResult)


def _emit_refused(
    tx: Transaction,
    project_id: int,
    agent: str,
    source: str,
    paths: list[str],
    conflicts: list[LeaseConflict],
) -> None:
    """Record a refusal (a conflict the dashboard shows under "Needs attention")."""
    tx.emit(
        EventType.RESERVATION_REFUSED,
        agent,
        project_id,
        agent=agent,
        source=source,
        paths=paths,
        conflicts=[{"path": c.path, "holder": c.holder, "pattern": c.pattern} for c in conflicts[:20]],
    )


class ReservationService(Service):
    async def reserve(
        self,
        caller: Caller,
        paths: list[str],
        *,
        project: str | None = None,
        agent: str | None = None,
        exclusive: bool = True,
        ttl_s: int = DEFAULT_TTL_S,
        reason: str = "",
        issue: int | None = None,
        mode: ReserveMode = ReserveMode.ADVISORY,
        idempotency_key: str | None = None,
    ) -> ReservationResult:
        """Lease paths, globs or named resources for `ttl_s` seconds.

        Advisory (the default): grants what does not conflict and lists the conflicts.
        Strict: grants nothing when anything conflicts. Re-reserving a pattern one
        already holds renews it (new expiry, exclusivity, reason and issue). `issue` names
        the issue of the project the leases serve (any status; closing it changes no lease).
        """
        caller.require(Op.RESERVATION_WRITE)
        name = caller.acting_agent(agent)
        patterns, notes = parse_patterns("paths", paths, maximum=MAX_RESERVE_PATHS)
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise InvalidInput("ttl_s", f"must be between {MIN_TTL_S} and {MAX_TTL_S} seconds")
        reason = rules.line("reason", reason.strip(), max_len=MAX_REASON, required=False)
        if issue is not None and not 1 <= issue <= rules.MAX_ID:
            raise InvalidInput("issue", f"must be an issue id between 1 and {rules.MAX_ID}")
        key = (
            None
            if idempotency_key is None
            else rules.line("idempotency_key", idempotency_key, max_len=rules.MAX_LINE)
        )
        request: dict[str, Any] = {
            "paths": [p.text for p in patterns],
            "exclusive": exclusive,
            "ttl_s": ttl_s,
            "reason": reason,
            "issue": issue,
            "mode": mode.value,
        }
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            await locks.lock_project(tx.conn, locks.RESERVATIONS, proj.id)  # first: lease decisions queue
            me = await self.acting_as(tx.conn, proj.id, caller, name, lock=True)  # not retiring meanwhile
            if issue is not None and not await issue_store.existing_ids(tx.conn, proj.id, [issue]):
                raise InvalidInput("issue", f"no such issue in this project: {issue}")
            if key is not None:
                replayed = await _replay(tx, proj.id, me.id, key, request)
                if replayed is not None:
                    return replayed
            texts = [p.text for p in patterns]
            mine = {r.pattern: r for r in await store.held_of(tx.conn, me.id, tx.now, texts)}
            conflicts = await in_the_way(
                tx.conn, proj.id, tx.now, patterns, exclusive=exclusive, holder_id=me.id
            )
            blocked = {c.path for c in conflicts}
            grant = (
                []
                if mode == ReserveMode.STRICT and conflicts
                else [p for p in patterns if p.text not in blocked]
            )
            expires_at = tx.now + timedelta(seconds=ttl_s)
            terms = _Terms(exclusive, reason, issue, expires_at)
            ids = [await _lease(tx, proj.id, me.id, pattern.text, mine, terms) for pattern in grant]
            granted = await store.by_ids(tx.conn, ids)
            if conflicts:
                refused = [p.text for p in patterns if p not in grant]
                _emit_refused(tx, proj.id, name, mode.value, refused, conflicts)
            if granted:
                _announce(tx, name, proj.id, granted, set(mine), terms)
            result = ReservationResult(granted=granted, conflicts=conflicts, warnings=notes)
            if key is not None:
                await _remember(tx, proj.id, me.id, key, request, result)
        return result

    async def release(
        self,
        caller: Caller,
        paths: list[str] | None = None,
        *,
        project: str | None = None,
        agent: str | None = None,
    ) -> ReleaseResult:
        """Release the caller's leases on exactly these patterns, or all of them when `paths` is None."""
        caller.require(Op.RESERVATION_WRITE)
        name = caller.acting_agent(agent)
        wanted = None
        if paths is not None:
            if not paths:
                raise InvalidInput(
                    "paths", "give at least one pattern, or omit paths to release all your leases"
                )
            wanted = [p.text for p in parse_patterns("paths", paths, maximum=MAX_CHECK_PATHS)[0]]
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            me = await self.acting_as(tx.conn, proj.id, caller, name)
            if wanted is None:
                targets, not_held = await store.held_by(tx.conn, me.id, tx.now), []
            else:  # those leases alone, however many others the agent holds
                targets = await store.held_of(tx.conn, me.id, tx.now, wanted)
                held_patterns = {r.pattern for r in targets}
                not_held = [p for p in wanted if p not in held_patterns]
            await store.release(tx.conn, [r.id for r in targets], tx.now)
            _emit_released(tx, name, proj.id, name, targets, "released")
        return ReleaseResult(released=targets, not_held=not_held)

    async def check(
        self,
        caller: Caller,
        paths: list[str],
        *,
        project: str | None = None,
        agent: str | None = None,
        exclusive: bool = True,
        report: bool = False,
        files: bool = False,
    ) -> PathCheck:
        """Read-only: which leases of others would conflict with leasing `paths` (changes nothing).

        `exclusive=False` asks only about others' exclusive leases (what a shared lease,
        or a commit guard, must respect). The acting agent's own leases never conflict.
        `files=True`: the paths are files (a commit's, an edit's), and a lease conflicts only when it
        covers one of them (not because a path could be a directory holding what the lease matches).
        `report=True` (the commit guard, about to refuse a commit) records the conflicts as a
        `reservation.refused` event with source "guard" — only for callers that may write leases.
        """
        caller.require(Op.RESERVATION_READ)
        me = caller.acting_agent(agent) if (agent or caller.agent) else None
        patterns, _ = parse_patterns("paths", paths, maximum=MAX_CHECK_PATHS)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            # Acting as an agent (whose leases do not count, and who is named on a report) needs that
            # agent registered, active and one the token may speak for: no report under a made-up name.
            await self.check_actor(tx.conn, proj.id, caller, agent)
            conflicts = await in_the_way(tx.conn, proj.id, tx.now, patterns, exclusive=exclusive, files=files)
        conflicts = [c for c in conflicts if c.holder != me]  # the acting agent's own never conflict
        blocked = {c.path for c in conflicts}
        if report and conflicts and allowed(caller.role, Op.RESERVATION_WRITE):
            async with self.write() as tx:
                proj = await self.project(tx.conn, caller, project)
                _emit_refused(tx, proj.id, me or caller.display, "guard", sorted(blocked), conflicts)
        return PathCheck(conflicts=conflicts, free=[p.text for p in patterns if p.text not in blocked])

    async def list(
        self, caller: Caller, *, project: str | None = None, holder: str | None = None
    ) -> list[Reservation]:
        """Live leases of the project (optionally of one holder), oldest first."""
        caller.require(Op.RESERVATION_READ)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            held = await store.live_in_project(tx.conn, proj.id, tx.now)
        return [r for r in held if holder is None or r.holder == holder]

    async def sweep_expired(self) -> int:
        """Record leases that expired (readers already ignore them) and announce their release."""
        async with self.write() as tx:
            ended = await store.expired(tx.conn, tx.now)
            await store.mark_expired(tx.conn, [r.id for _, r in ended])
            by_holder: dict[tuple[int, str], list[Reservation]] = {}
            for project_id, lease in ended:
                by_holder.setdefault((project_id, lease.holder), []).append(lease)
            for (project_id, holder), leases in by_holder.items():
                _emit_released(tx, "system", project_id, holder, leases, "expired")
        return len(ended)


# Leases one `reservation.released` event names at most: a release of thousands is told in several
# events (one of 15,000 was 1.5 MB, past the 1 MiB a WebSocket client takes by default).
RELEASED_PER_EVENT = 500


def _emit_released(
    tx: Transaction, actor: str, project_id: int, holder: str, leases: list[Reservation], reason: str
) -> None:
    for start in range(0, len(leases), RELEASED_PER_EVENT):
        part = leases[start : start + RELEASED_PER_EVENT]
        tx.emit(
            EventType.RESERVATION_RELEASED,
            actor,
            project_id,
            agent=holder,
            ids=[r.id for r in part],
            patterns=[r.pattern for r in part],
            reason=reason,
        )


async def _replay(
    tx: Transaction, project_id: int, agent_id: int, key: str, request: dict[str, Any]
) -> ReservationResult | None:
    """The result of an earlier reserve with this idempotency key, if any (same arguments only): its
    leases as they are now. A lease it granted that has ended since (released, expired, taken over)
    is not replayed as granted: a warning says so, as an agent must not edit on a lease it lost."""
    stored = await idempotency.load(tx.conn, project_id, agent_id, OPERATION, key, tx.now)
    if stored is None:
        return None
    if stored["request"] != request:
        raise Conflict(
            "idempotency_key was already used with different arguments; use a new key for a new request",
            idempotency_key=key,
        )
    first = _RESULT.validate_python(stored["result"])
    if not first.granted:
        return first
    held = {
        r.pattern: r
        for r in await store.held_of(tx.conn, agent_id, tx.now, [g.pattern for g in first.granted])
    }
    ended = [g.pattern for g in first.granted if g.pattern not in held]
    return ReservationResult(
        granted=[held[g.pattern] for g in first.granted if g.pattern in held],
        conflicts=first.conflicts,
        warnings=first.warnings
        + [
            f"'{pattern}': the lease the first call with this idempotency_key granted has ended since"
            " (released or expired): you do not hold it; reserve it again with a new key"
            for pattern in ended
        ],
    )


async def _remember(
    tx: Transaction,
    project_id: int,
    agent_id: int,
    key: str,
    request: dict[str, Any],
    result: ReservationResult,
) -> None:
    """Keep the result of a reserve under its idempotency key, for `_replay`."""
    stored = {"request": request, "result": _RESULT.dump_python(result, mode="json")}
    await idempotency.save(tx.conn, project_id, agent_id, OPERATION, key, stored, tx.now)


@dataclass(frozen=True)
class _Terms:
    """What one reserve call grants every pattern: exclusivity, reason, issue and expiry."""

    exclusive: bool
    reason: str
    issue: int | None
    expires_at: datetime


async def _lease(
    tx: Transaction,
    project_id: int,
    agent_id: int,
    pattern: str,
    mine: dict[str, Reservation],
    terms: _Terms,
) -> int:
    """Renew the caller's lease on `pattern`, or take a new one; its id."""
    current = mine.get(pattern)
    if current is not None:
        await store.renew(
            tx.conn,
            current.id,
            exclusive=terms.exclusive,
            reason=terms.reason,
            issue=terms.issue,
            expires_at=terms.expires_at,
        )
        return current.id
    return await store.insert(
        tx.conn,
        project_id=project_id,
        agent_id=agent_id,
        pattern=pattern,
        exclusive=terms.exclusive,
        reason=terms.reason,
        issue=terms.issue,
        now=tx.now,
        expires_at=terms.expires_at,
    )


def _announce(
    tx: Transaction,
    name: str,
    project_id: int,
    granted: list[Reservation],
    renewed: set[str],
    terms: _Terms,
) -> None:
    """The `reservation.granted` event of a reserve call (renewed: the patterns the agent held before)."""
    tx.emit(
        EventType.RESERVATION_GRANTED,
        name,
        project_id,
        agent=name,
        ids=[r.id for r in granted],
        patterns=[r.pattern for r in granted],
        exclusive=terms.exclusive,
        reason=terms.reason,
        issue=terms.issue,
        expires_at=terms.expires_at.isoformat(),
        renewed=[r.pattern for r in granted if r.pattern in renewed],
    )
