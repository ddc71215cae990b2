"""Concurrent writes to one issue: on PostgreSQL (READ COMMITTED, a pool of connections) they give
the same answers as on SQLite, where writes are serial. Each race runs a few rounds of calls started
together (asyncio.gather), which on PostgreSQL run on separate connections at once."""

from __future__ import annotations

import asyncio
from collections import Counter

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.errors import Conflict, PermissionDenied, VersionConflict
from vibe_ensemble.domain.models import ClosedIssue, Issue
from vibe_ensemble.services import Services

from .test_claims import bound, register

ROUNDS = 5
RACERS = 8


def kinds(results: list[object]) -> Counter[str]:
    """What each call came to: "ok", or the error's code."""
    return Counter(
        getattr(r, "code", type(r).__name__) if isinstance(r, BaseException) else "ok" for r in results
    )


async def test_unconditioned_concurrent_updates_all_succeed(services: Services, admin: Caller) -> None:
    names = await register(services, admin, RACERS)
    for _ in range(ROUNDS):
        issue = await services.issues.create(admin, title="edited by many")
        results = await asyncio.gather(
            *(services.issues.update(bound(n), issue.id, labels=[n]) for n in names),
            return_exceptions=True,
        )
        assert kinds(results) == {"ok": RACERS}, results
        after = (await services.issues.get(admin, issue.id)).issue
        assert after.version == 1 + RACERS
        assert sorted(r.version for r in results if isinstance(r, Issue)) == list(range(2, RACERS + 2))


async def test_conditioned_concurrent_updates_have_one_winner(services: Services, admin: Caller) -> None:
    names = await register(services, admin, RACERS)
    for _ in range(ROUNDS):
        issue = await services.issues.create(admin, title="edited by many")
        results = await asyncio.gather(
            *(services.issues.update(bound(n), issue.id, labels=[n], expected_version=1) for n in names),
            return_exceptions=True,
        )
        assert kinds(results) == {"ok": 1, "version_conflict": RACERS - 1}, results
        for loss in results:
            if isinstance(loss, VersionConflict):
                assert loss.details == {"id": issue.id, "current_version": 2, "expected_version": 1}


async def test_duplicate_concurrent_closes_see_it_already_done(services: Services, admin: Caller) -> None:
    names = await register(services, admin, RACERS)
    for _ in range(ROUNDS):
        issue = await services.issues.create(admin, title="closed by many")
        results = await asyncio.gather(
            *(services.issues.close(bound(n), issue.id, "done") for n in names), return_exceptions=True
        )
        assert kinds(results) == {"ok": 1, "conflict": RACERS - 1}, results
        for loss in results:
            if isinstance(loss, Conflict):
                assert loss.message == f"issue {issue.id} is already done"


async def test_self_assignment_race_has_one_winner_as_on_sqlite(services: Services, admin: Caller) -> None:
    names = await register(services, admin, RACERS)
    for _ in range(ROUNDS):
        issue = await services.issues.create(admin, title="assign race")
        results = await asyncio.gather(
            *(services.issues.update(bound(n), issue.id, assignee=n) for n in names), return_exceptions=True
        )
        # the first assigns it to itself; the others may no longer change an issue someone else holds
        assert kinds(results) == {"ok": 1, "permission_denied": RACERS - 1}, results
        assert all(isinstance(r, Issue | PermissionDenied) for r in results)


async def test_a_coordinator_edit_does_not_spoil_a_claim(services: Services, admin: Caller) -> None:
    [name] = await register(services, admin, 1)
    for _ in range(ROUNDS * 2):
        issue = await services.issues.create(admin, title="claimed while edited")
        results = await asyncio.gather(
            services.issues.claim(bound(name), issue.id),
            *(services.issues.update(admin, issue.id, labels=[f"x{k}"]) for k in range(3)),
            return_exceptions=True,
        )
        assert kinds(results) == {"ok": 4}, results
        after = (await services.issues.get(admin, issue.id)).issue
        assert (after.assignee, after.status, after.version) == (name, IssueStatus.IN_PROGRESS, 5)


async def test_concurrent_closes_of_the_last_dependencies_announce_the_dependant(
    services: Services, admin: Caller
) -> None:
    names = await register(services, admin, 2)
    for _ in range(ROUNDS):
        a = await services.issues.create(admin, title="a")
        b = await services.issues.create(admin, title="b")
        d = await services.issues.create(admin, title="d", depends_on=[a.id, b.id])
        results = await asyncio.gather(
            services.issues.close(bound(names[0]), a.id, "done"),
            services.issues.close(bound(names[1]), b.id, "done"),
        )
        assert sorted(i.id for r in results if isinstance(r, ClosedIssue) for i in r.now_ready) == [d.id]
        ready = await services.events.page(admin, types=["issue.ready"])
        assert [e.payload["id"] for e in ready.items].count(d.id) == 1


async def test_a_dependency_reopened_while_its_dependant_is_claimed(
    services: Services, admin: Caller
) -> None:
    """Either the claim wins (and the reopen is refused, naming the dependant) or the reopen does (and
    the claim is refused, naming the dependency): never an issue in progress on an open dependency."""
    names = await register(services, admin, RACERS)
    outcomes: Counter[str] = Counter()
    for _ in range(ROUNDS * 2):
        a = await services.issues.create(admin, title="a")
        await services.issues.close(admin, a.id, "done")
        d = await services.issues.create(admin, title="d", depends_on=[a.id])
        reopened, *claims = await asyncio.gather(
            services.issues.update(admin, a.id, status=IssueStatus.OPEN),
            *(services.issues.claim(bound(n), d.id) for n in names),
            return_exceptions=True,
        )
        after = (await services.issues.get(admin, d.id)).issue
        dep = (await services.issues.get(admin, a.id)).issue
        if isinstance(reopened, Issue):
            outcomes["reopened"] += 1
            assert dep.status == IssueStatus.OPEN
            assert after.status == IssueStatus.OPEN and after.assignee is None
            assert kinds(claims) == {"conflict": RACERS}, claims
        else:
            outcomes["claimed"] += 1
            assert isinstance(reopened, Conflict) and not isinstance(reopened, VersionConflict), reopened
            assert reopened.details["dependants"] == [d.id]
            assert dep.status == IssueStatus.DONE
            assert after.status == IssueStatus.IN_PROGRESS
            assert kinds(claims) == {"ok": 1, "already_claimed": RACERS - 1}, claims


async def test_starting_an_issue_while_its_dependency_closes(services: Services, admin: Caller) -> None:
    """An update starting an issue and the close of its last dependency queue on the dependency's row
    (upstream first), never in a ring: the start waits for the close, or is refused naming it."""
    [name] = await register(services, admin, 1)
    for _ in range(ROUNDS * 2):
        a = await services.issues.create(admin, title="a")
        d = await services.issues.create(admin, title="d", depends_on=[a.id])
        started, closed = await asyncio.gather(
            services.issues.update(admin, d.id, assignee=name, status=IssueStatus.IN_PROGRESS),
            services.issues.close(admin, a.id, "done"),
            return_exceptions=True,
        )
        assert isinstance(closed, ClosedIssue), closed
        if not isinstance(started, Issue):
            assert isinstance(started, Conflict) and started.details["waiting_on"] == [a.id], started
