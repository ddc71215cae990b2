"""Claims: which issue a claim takes, atomically (exactly one of many racing callers wins), and
which issues a close makes claimable.

`IssueService.claim` checks the caller and records the claim; these functions pick the
issue inside its transaction. `IssueService.close` announces what its close made ready.
"""

from __future__ import annotations

from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.errors import AlreadyClaimed, Conflict, NotFound
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Agent, Issue, Project
from vibe_ensemble.services.base import Transaction
from vibe_ensemble.store import dependencies as dependency_store
from vibe_ensemble.store import issues as store
from vibe_ensemble.store.database import Connection


async def take_named(tx: Transaction, project_id: int, issue: Issue) -> Issue:
    """Take one issue (as the caller just read it), or say why not (who holds it, what it waits on)."""
    await check_claimable(tx.conn, issue)
    if not await store.take(tx.conn, issue, tx.now):
        # Someone changed it since we read it: say who won (or why it is no longer
        # claimable); if it merely moved to a new version (an edit), take that one. Read with its
        # row locked, so further edits queue behind the claim instead of moving it on again.
        issue = await store.get_for_update(tx.conn, project_id, issue.id)
        await check_claimable(tx.conn, issue)
        if not await store.take(tx.conn, issue, tx.now):
            raise Conflict(f"issue {issue.id} changed while claiming; retry", id=issue.id)
    return issue


async def take_best(tx: Transaction, project: Project, me: Agent) -> Issue:
    """Take the best ready issue for `me`: labelled with one of its capabilities first (letter case
    ignored), then priority, then age: ordered so by the database, over the first
    `store.READY_WINDOW` ready issues by priority and age."""
    candidates = await store.ready_for(tx.conn, project.id, me.capabilities, limit=200)
    for candidate in candidates:
        if candidate.depends_on and await unfinished_dependencies(tx.conn, candidate.depends_on):
            continue  # a dependency was reopened since the list was read
        if await store.take(tx.conn, candidate, tx.now):
            return candidate
    raise NotFound("no issue is ready to claim", project=project.slug)


async def check_claimable(conn: Connection, issue: Issue) -> None:
    if issue.status.finished:  # first: a finished issue keeps the agent that finished it
        raise Conflict(f"issue {issue.id} is {issue.status.value}, not open", id=issue.id)
    if issue.assignee is not None:
        raise AlreadyClaimed(
            f"issue {issue.id} is already claimed by {issue.assignee}",
            id=issue.id,
            assignee=issue.assignee,
        )
    if issue.status != IssueStatus.OPEN:
        raise Conflict(f"issue {issue.id} is {issue.status.value}, not open", id=issue.id)
    # whether it is still open and unassigned, `store.take` decides, atomically
    await check_dependencies_done(conn, issue)


async def unfinished_dependencies(conn: Connection, depends_on: list[int]) -> list[int]:
    """Which of these dependencies are unfinished, each share-locked until the transaction ends, so
    none can be reopened before the issue depending on them has started (or not)."""
    statuses = await dependency_store.statuses_for_share(conn, depends_on)
    return [d for d, status in statuses.items() if status not in dependency_store.FINISHED]


async def check_dependencies_done(conn: Connection, issue: Issue) -> None:
    """Refuse starting `issue` while any issue it depends on is unfinished (a claim, or an update to
    in_progress: work waits for what it depends on, whichever way it starts). No query when it
    depends on nothing."""
    if issue.depends_on:
        refuse_waiting(issue, await unfinished_dependencies(conn, issue.depends_on))


def refuse_waiting(issue: Issue, waiting: list[int]) -> None:
    """Refuse starting `issue`, or keeping it in progress, while it waits on these unfinished
    dependencies (none: nothing refused)."""
    if waiting:
        raise Conflict(
            f"issue {issue.id} waits on unfinished dependencies: {', '.join(f'#{d}' for d in waiting)}",
            id=issue.id,
            waiting_on=waiting,
        )


async def start_assigned(tx: Transaction, issue: Issue) -> None:
    """Start an open issue already assigned to the claimer (a coordinator assigned it)."""
    await check_dependencies_done(tx.conn, issue)
    if not await store.update(tx.conn, issue, tx.now, status=IssueStatus.IN_PROGRESS.value):
        raise Conflict(f"issue {issue.id} changed while claiming; retry", id=issue.id)


async def announce_ready(tx: Transaction, project_id: int, issue_id: int, actor: str) -> list[Issue]:
    """The dependants of a just-closed issue that are ready now, each announced (`issue.ready`)."""
    ready = [
        d
        for d in await dependency_store.dependants_for_update(tx.conn, issue_id)
        if await dependency_store.is_ready(tx.conn, d)
    ]
    loaded = await store.by_ids(tx.conn, ready)
    for issue in loaded:
        tx.emit(
            EventType.ISSUE_READY, actor, project_id, id=issue.id, title=issue.title, unblocked_by=issue_id
        )
    return loaded
