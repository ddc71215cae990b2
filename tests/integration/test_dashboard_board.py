"""The dashboard's board: five columns for people, the first few cards of each and true counts —
on SQLite and PostgreSQL."""

from __future__ import annotations

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus, Priority
from vibe_ensemble.services import Services


async def test_columns_hold_the_first_cards_and_count_them_all(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ana")
    base = await services.issues.create(admin, title="Base", priority=Priority.P2)
    ready = [await services.issues.create(admin, title=f"Ready {i}", priority=Priority.P3) for i in range(4)]
    urgent = await services.issues.create(admin, title="Urgent", priority=Priority.P0)
    waiting = await services.issues.create(admin, title="Waits", depends_on=[base.id])
    marked = await services.issues.create(admin, title="Marked")
    await services.issues.update(admin, marked.id, status=IssueStatus.BLOCKED)
    await services.issues.create(admin, title="Assigned, open", assignee="ana")  # open, not ready
    await services.issues.claim(admin, base.id, agent="ana")
    review = await services.issues.create(admin, title="Review")
    await services.issues.update(admin, review.id, status=IssueStatus.REVIEW)
    finished = []
    for i in range(3):
        issue = await services.issues.create(admin, title=f"Finished {i}")
        await services.issues.close(admin, issue.id, resolution="ok")
        finished.append(issue.id)

    board = await services.dashboard.board(admin, per_column=2)
    assert board.counts == {"ready": 5, "in_progress": 1, "review": 1, "blocked": 3, "done": 3}
    ids = {k: [c.id for c in v] for k, v in board.columns.items()}
    assert ids["ready"] == [urgent.id, ready[0].id]  # most urgent first, then oldest
    assert ids["in_progress"] == [base.id] and ids["review"] == [review.id]
    assert ids["blocked"] == [waiting.id, marked.id]  # same priority: oldest first; the third is counted
    assert ids["done"] == [finished[2], finished[1]]  # newest first
    assert all(c.ready for c in board.columns["ready"])
    assert [a.name for a in board.agents] == ["ana"]
