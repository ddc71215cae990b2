"""Wanted lease patterns: read from what a caller gave, and which live leases stand in their way
(the overlap of every pair, within budgets).

Each comparison is bounded by domain/overlap.py's work budget and a whole call by CALL_BUDGET;
past either the call is refused rather than answered with a guess. The comparisons run in a
worker thread, so the event loop keeps answering. services/reservations.py decides with them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from vibe_ensemble.domain import globs, overlap
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.models import LeaseConflict, Reservation
from vibe_ensemble.store import reservations as store
from vibe_ensemble.store.database import Connection

# Steps one call may spend comparing its patterns with the live leases (see domain/overlap.py;
# one comparison of ordinary globs costs tens of steps, the worst one overlap.WORK_BUDGET).
CALL_BUDGET = 1_000_000
READ_BATCH = 500  # leases read whole per statement (`store.by_ids`), within every database's limits


def parse_patterns(
    field: str, paths: list[str], *, maximum: int
) -> tuple[list[globs.LeasePattern], list[str]]:
    """Validate, normalise and de-duplicate patterns; returns them and notes on rewrites."""
    if not paths:
        raise InvalidInput(field, "give at least one path, glob or resource")
    if len(paths) > maximum:
        raise InvalidInput(field, f"at most {maximum} entries (got {len(paths)})")
    patterns: dict[str, globs.LeasePattern] = {}
    notes: list[str] = []
    for i, raw in enumerate(paths):
        pattern, note = globs.parse(f"{field}[{i}]", raw)
        if note:
            notes.append(note)
        patterns.setdefault(pattern.text, pattern)
    return list(patterns.values()), notes


def _stored(text: str) -> globs.LeasePattern:
    # a stored lease was valid when granted; limits tightened since must not make it unreadable
    return globs.stored(text)


def conflicts_with(
    wanted: list[globs.LeasePattern], held: list[Reservation], *, exclusive: bool, files: bool = False
) -> list[LeaseConflict]:
    """Leases in `held` that stand in the way: overlapping, and exclusive on either side. With
    `files` the wanted paths are files (a commit's, an edit's): a lease stands in the way when it
    covers one of them (`overlap.covered_file`), not because one could be a directory.

    Bounded: each comparison within overlap.WORK_BUDGET steps and the whole call within
    CALL_BUDGET; past either the call is refused (InvalidInput naming the pattern), never
    answered with a guess.
    """
    found: list[LeaseConflict] = []
    spent = 0
    # a shared request is stood in the way of by exclusive leases only, an exclusive one by every lease
    candidates = held if exclusive else [lease for lease in held if lease.exclusive]
    for pattern in wanted:
        for lease in candidates:
            if not overlap.may_overlap(pattern.text, lease.pattern):
                continue  # decided from the two texts, before any work on the automata
            budget = overlap.Budget(min(overlap.WORK_BUDGET, CALL_BUDGET - spent))
            try:
                if files:
                    overlapping = overlap.covered_file(_stored(lease.pattern), pattern, budget) is not None
                else:
                    overlapping = overlap.overlaps(pattern, _stored(lease.pattern), budget)
            except overlap.TooComplex:
                if budget.limit < overlap.WORK_BUDGET:
                    raise InvalidInput(
                        "paths",
                        f"comparing these {len(wanted)} patterns with the {len(held)} live leases "
                        "takes too long; send fewer patterns per call or simpler globs",
                    ) from None
                raise InvalidInput(
                    "paths",
                    f"the pattern {pattern.text!r} is too complex to compare with the lease "
                    f"{lease.pattern!r}; use fewer wildcards (e.g. one '*' per segment, or a "
                    "directory such as src/api/**)",
                    value=pattern.text,
                ) from None
            spent += budget.spent + 1
            if overlapping:
                found.append(
                    LeaseConflict(
                        path=pattern.text,
                        holder=lease.holder,
                        pattern=lease.pattern,
                        exclusive=lease.exclusive,
                        reason=lease.reason,
                        expires_at=lease.expires_at,
                        reservation_id=lease.id,
                    )
                )
    return found


async def find_conflicts(
    wanted: list[globs.LeasePattern], held: list[Reservation], *, exclusive: bool, files: bool = False
) -> list[LeaseConflict]:
    """`conflicts_with`, in a worker thread: the event loop (and /healthz) keeps answering."""
    if not held:
        return []
    return await asyncio.to_thread(conflicts_with, wanted, held, exclusive=exclusive, files=files)


async def in_the_way(
    conn: Connection,
    project_id: int,
    now: datetime,
    wanted: list[globs.LeasePattern],
    *,
    exclusive: bool,
    files: bool = False,
    holder_id: int | None = None,
) -> list[LeaseConflict]:
    """The live leases of the project (but `holder_id`'s) that stand in the way of `wanted`.

    Every live lease is read as a narrow row and sifted by its text (`overlap.Prefixes`: a lease
    whose literal prefix and each wanted one's are not one the start of the other cannot overlap
    it); only the few left are read whole and compared exactly (`find_conflicts`). Reading every
    lease whole cost a reservation 90 ms among 5,500 live leases and 600 ms among 15,500.
    """
    sieve = overlap.Prefixes([pattern.text for pattern in wanted])
    ids = [
        lease_id
        for lease_id, agent_id, pattern, lease_exclusive in await store.live_patterns(conn, project_id, now)
        if agent_id != holder_id and (exclusive or lease_exclusive) and sieve.may_overlap(pattern)
    ]
    held = []
    for start in range(0, len(ids), READ_BATCH):
        held += await store.by_ids(conn, ids[start : start + READ_BATCH])
    return await find_conflicts(wanted, held, exclusive=exclusive, files=files)
