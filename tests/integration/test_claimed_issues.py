"""The claimed-issue rule of the permission matrix: an issue an agent holds is changed only by that
agent, a coordinator or an admin; any other agent may comment on it (tests/e2e: both doors)."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus, Priority, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.services import Services

from .snapshot import snapshot

W1 = Caller(credential_id=11, role=TokenRole.WORKER, project="default", agent="w1", label="w1")
W2 = Caller(credential_id=12, role=TokenRole.WORKER, project="default", agent="w2", label="w2")
TEAM = Caller(credential_id=13, role=TokenRole.WORKER, label="team")


@pytest.fixture
async def held(services: Services, admin: Caller) -> int:
    """w1 and w2 registered; w1 has claimed an issue; returns its id."""
    await services.agents.register(W1)
    await services.agents.register(W2)
    issue = await services.issues.create(admin, title="w1's job")
    await services.issues.claim(W1, issue.id)
    return issue.id


async def test_another_worker_may_only_comment(services: Services, held: int) -> None:
    before = await snapshot(services.ctx.db)
    attempts = [
        services.issues.update(W2, held, title="mine now"),
        services.issues.update(W2, held, assignee="w2"),
        services.issues.update(W2, held, assignee=None),
        services.issues.update(W2, held, status=IssueStatus.BLOCKED),
        services.issues.close(W2, held, "done by someone else"),
        services.issues.update(TEAM, held, title="as w2", agent="w2"),
        services.issues.close(TEAM, held, "as w2", agent="w2"),
        services.issues.update(TEAM, held, title="as the token"),  # acting as no agent
        services.issues.close(TEAM, held, "as the token"),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied) as err:
            await attempt
        assert f"issue {held} is claimed by w1" in err.value.message
        assert "only by that agent, a coordinator or an admin; anyone else may comment" in err.value.message
        assert err.value.details["operation"] == "issue.change_claimed"
        assert err.value.details["assignee"] == "w1"
    assert await snapshot(services.ctx.db) == before
    comment = await services.issues.comment(W2, held, "I can help with the tests")
    assert comment.author == "w2"


async def test_the_assignee_changes_and_closes_its_issue(services: Services, held: int) -> None:
    updated = await services.issues.update(W1, held, title="renamed by w1", status=IssueStatus.REVIEW)
    assert (updated.title, updated.assignee) == ("renamed by w1", "w1")
    closed = await services.issues.close(TEAM, held, "done", agent="w1")  # a team token acting as w1
    assert closed.issue.status == IssueStatus.DONE


async def test_the_assignee_may_let_go(services: Services, held: int) -> None:
    released = await services.issues.update(W1, held, assignee=None)
    assert (released.assignee, released.status) == (None, IssueStatus.OPEN)  # not in progress with nobody
    # unclaimed again: any worker may change it, and claim it
    assert (await services.issues.update(W2, held, title="picked up")).title == "picked up"
    assert (await services.issues.claim(W2, held)).assignee == "w2"


async def test_in_progress_needs_an_assignee(services: Services, held: int, admin: Caller) -> None:
    unheld = await services.issues.create(admin, title="nobody's")
    before = await snapshot(services.ctx.db)
    for attempt in (
        services.issues.update(W2, unheld.id, status=IssueStatus.IN_PROGRESS),
        services.issues.update(W1, held, assignee=None, status=IssueStatus.IN_PROGRESS),
    ):
        with pytest.raises(InvalidInput, match="status: in_progress needs an assignee: claim the issue"):
            await attempt
    assert await snapshot(services.ctx.db) == before
    started = await services.issues.update(W2, unheld.id, status=IssueStatus.IN_PROGRESS, assignee="w2")
    assert (started.status, started.assignee) == (IssueStatus.IN_PROGRESS, "w2")


@pytest.mark.parametrize("role", [TokenRole.COORDINATOR, TokenRole.ADMIN])
async def test_coordinators_and_admins_change_any_issue(
    services: Services, held: int, role: TokenRole
) -> None:
    lead = Caller(credential_id=20, role=role, label="lead")
    moved = await services.issues.update(lead, held, assignee="w2")
    assert moved.assignee == "w2"
    closed = await services.issues.close(lead, held, "wrapped up")
    assert closed.issue.status == IssueStatus.DONE


async def test_unclaimed_issues_stay_open_to_every_worker(services: Services, admin: Caller) -> None:
    await services.agents.register(W2)
    issue = await services.issues.create(admin, title="nobody's yet")
    assert (await services.issues.update(W2, issue.id, priority=Priority.P1)).priority == Priority.P1
    assert (await services.issues.close(W2, issue.id, "trivial")).issue.status == IssueStatus.DONE


async def test_the_refusal_is_checked_before_the_version(services: Services, held: int) -> None:
    """A refused caller learns nothing from a version conflict: the rule answers first."""
    with pytest.raises(PermissionDenied):
        await services.issues.update(W2, held, title="x", expected_version=999)
