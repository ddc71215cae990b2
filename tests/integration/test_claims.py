"""claim_issue: atomic under a race (exactly one winner), and without an id the best ready issue."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import IssueStatus, Priority, TokenRole
from vibe_ensemble.domain.errors import AlreadyClaimed, Conflict, InvalidInput, NotFound
from vibe_ensemble.domain.models import Issue
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store.tables import issues

from .snapshot import snapshot

RACERS = 20


def bound(name: str) -> Caller:
    """A worker token bound to one agent, as the services see it."""
    return Caller(credential_id=None, role=TokenRole.WORKER, agent=name, label=name)


async def register(services: Services, admin: Caller, count: int) -> list[str]:
    names = [f"racer-{i:02d}" for i in range(count)]
    for name in names:
        await services.agents.register(admin, name=name)
    return names


def split(results: list[Issue | BaseException]) -> tuple[list[Issue], list[BaseException]]:
    wins = [r for r in results if isinstance(r, Issue)]
    losses = [r for r in results if not isinstance(r, Issue)]
    return wins, losses


async def check_one_winner(
    services: Services, admin: Caller, issue_id: int, names: list[str], results: list[Issue | BaseException]
) -> None:
    wins, losses = split(results)
    assert len(wins) == 1, f"expected one winner, got {[w.assignee for w in wins]}"
    winner = wins[0].assignee
    assert winner in names
    assert len(losses) == RACERS - 1
    for loss in losses:
        assert isinstance(loss, AlreadyClaimed), repr(loss)
        assert loss.message == f"issue {issue_id} is already claimed by {winner}"
        assert loss.details["assignee"] == winner
    detail = await services.issues.get(admin, issue_id)
    assert detail.issue.assignee == winner
    assert detail.issue.status == IssueStatus.IN_PROGRESS
    assert detail.issue.version == 2
    claimed = await services.events.page(admin, types=["issue.claimed"])
    assert [(e.payload["id"], e.payload["assignee"]) for e in claimed.items] == [(issue_id, winner)]


async def test_twenty_agents_race_for_one_issue(services: Services, admin: Caller) -> None:
    names = await register(services, admin, RACERS)
    issue = await services.issues.create(admin, title="the only job")
    results = await asyncio.gather(
        *(services.issues.claim(bound(n), issue.id) for n in names), return_exceptions=True
    )
    await check_one_winner(services, admin, issue.id, names, results)


@pytest.mark.postgres
async def test_twenty_runtimes_race_on_postgres(postgres_url: str, tmp_path: Path, admin: Caller) -> None:
    """Twenty engines, twenty connections: a real cross-connection race decided by PostgreSQL."""
    async with AsyncExitStack() as stack:
        runtimes: list[Runtime] = []
        for i in range(RACERS):
            rt = Runtime(Settings(database_url=postgres_url, data_dir=tmp_path))
            await rt.start(apply_migrations=i == 0)
            stack.push_async_callback(rt.stop)
            runtimes.append(rt)
        main = runtimes[0].services
        names = await register(main, admin, RACERS)
        issue = await main.issues.create(admin, title="the only job")
        # open a connection in every pool first, so the claims start together
        await asyncio.gather(*(rt.services.issues.get(admin, issue.id) for rt in runtimes))
        results = await asyncio.gather(
            *(rt.services.issues.claim(bound(n), issue.id) for rt, n in zip(runtimes, names, strict=True)),
            return_exceptions=True,
        )
        await check_one_winner(main, admin, issue.id, names, results)


async def test_racing_for_the_best_issue_gives_each_winner_a_different_one(
    services: Services, admin: Caller
) -> None:
    names = await register(services, admin, RACERS)
    created = [await services.issues.create(admin, title=f"job {i}") for i in range(5)]
    results = await asyncio.gather(*(services.issues.claim(bound(n)) for n in names), return_exceptions=True)
    wins, losses = split(results)
    assert sorted(w.id for w in wins) == [i.id for i in created]
    assert len({w.assignee for w in wins}) == 5
    assert len(losses) == RACERS - 5
    for loss in losses:
        assert isinstance(loss, NotFound), repr(loss)
        assert loss.message == "no issue is ready to claim"


async def test_claim_without_id_takes_priority_then_age(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    old_p2 = await services.issues.create(admin, title="old p2", priority=Priority.P2)
    first_p1 = await services.issues.create(admin, title="first p1", priority=Priority.P1)
    second_p1 = await services.issues.create(admin, title="second p1", priority=Priority.P1)
    waiting_p0 = await services.issues.create(
        admin, title="p0 but waits", priority=Priority.P0, depends_on=[old_p2.id]
    )
    order = [(await services.issues.claim(admin, agent="w1")).id for _ in range(3)]
    assert order == [first_p1.id, second_p1.id, old_p2.id]
    with pytest.raises(NotFound, match="no issue is ready to claim"):
        await services.issues.claim(admin, agent="w1")
    await services.issues.close(admin, old_p2.id, "done", agent="w1")
    assert (await services.issues.claim(admin, agent="w1")).id == waiting_p0.id


async def test_claim_without_id_prefers_issues_matching_capabilities(
    services: Services, admin: Caller
) -> None:
    await services.agents.register(admin, name="rustacean", capabilities=["rust"])
    await services.agents.register(admin, name="generalist")
    urgent = await services.issues.create(admin, title="urgent docs", priority=Priority.P0, labels=["docs"])
    rusty = await services.issues.create(admin, title="borrow checker", priority=Priority.P3, labels=["rust"])
    assert (await services.issues.claim(admin, agent="rustacean")).id == rusty.id
    assert (await services.issues.claim(admin, agent="generalist")).id == urgent.id


async def test_capabilities_match_labels_whatever_their_letter_case(runtime: Runtime) -> None:
    """Capabilities and labels are matched by their Unicode case folds, in the database: `Python`
    takes the p3 issue labelled `python` over a p0 without labels, `STRASSE` one labelled `straße`;
    and a matching issue is found however many better unmatched ones are ready before it (it took
    the best of the first 200 ready issues)."""
    services, admin = runtime.services, SYSTEM
    await services.agents.register(admin, name="pythonista", capabilities=["Python"])
    await services.agents.register(admin, name="streets", capabilities=["STRASSE"])
    await services.agents.register(admin, name="generalist")
    urgent = await services.issues.create(admin, title="urgent", priority=Priority.P0)

    def many_more_urgent_ones(conn: Connection) -> None:
        row = conn.execute(sa.select(issues).where(issues.c.id == urgent.id)).mappings().one()
        copy = {k: v for k, v in row.items() if k != "id"}
        conn.execute(issues.insert(), [{**copy, "title": f"urgent {i}"} for i in range(250)])

    await runtime.db.run_sync(many_more_urgent_ones, write=True)
    python = await services.issues.create(admin, title="typing", priority=Priority.P3, labels=["python"])
    street = await services.issues.create(admin, title="map", priority=Priority.P3, labels=["Straße"])
    assert (await services.issues.claim(admin, agent="pythonista")).id == python.id
    assert (await services.issues.claim(admin, agent="streets")).id == street.id
    assert (await services.issues.claim(admin, agent="generalist")).id == urgent.id


async def test_the_label_filter_ignores_letter_case(services: Services, admin: Caller) -> None:
    lower = await services.issues.create(admin, title="a", labels=["python"])
    upper = await services.issues.create(admin, title="b", labels=["PYTHON", "api"])
    await services.issues.create(admin, title="c", labels=["pythonic"])
    relabelled = await services.issues.create(admin, title="d", labels=["go"])
    await services.issues.update(admin, relabelled.id, labels=["Python"])
    page = await services.issues.list(admin, label="Python")
    assert [i.id for i in page.items] == [lower.id, upper.id, relabelled.id]
    assert page.items[1].labels == ["PYTHON", "api"]  # kept as written
    assert [i.id for i in (await services.issues.list(admin, label="go")).items] == []


async def test_issues_the_release_before_label_keys_wrote_match_their_labels_as_written(
    runtime: Runtime,
) -> None:
    """During a rolling upgrade the release before migration 0011 writes issues without label keys:
    they are matched by their labels as written."""
    services, admin = runtime.services, SYSTEM
    await services.agents.register(admin, name="pythonista", capabilities=["Python"])
    await services.issues.create(admin, title="urgent", priority=Priority.P0)
    old = await services.issues.create(admin, title="old", priority=Priority.P3, labels=["python"])

    def as_the_old_release_wrote_it(conn: Connection) -> None:
        conn.execute(sa.text("UPDATE issues SET label_keys = NULL WHERE id = :id"), {"id": old.id})

    await runtime.db.run_sync(as_the_old_release_wrote_it, write=True)
    assert [i.id for i in (await services.issues.list(admin, label="PYTHON")).items] == [old.id]
    assert (await services.issues.claim(admin, agent="pythonista")).id == old.id


async def test_claimed_issue_belongs_to_the_claimer(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    issue = await services.issues.create(admin, title="job")
    claimed = await services.issues.claim(bound("w1"), issue.id)
    assert claimed.assignee == "w1"
    assert claimed.status == IssueStatus.IN_PROGRESS
    me = await services.agents.heartbeat(bound("w1"))
    assert me.agent.status == "working"
    assert [i.id for i in me.assigned_issues] == [issue.id]
    assert me.ready_issues == []


async def test_issue_with_unfinished_dependencies_is_not_claimable(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    a = await services.issues.create(admin, title="a")
    b = await services.issues.create(admin, title="b")
    c = await services.issues.create(admin, title="c", depends_on=[a.id, b.id])
    await services.issues.close(admin, b.id, "done")
    before = await snapshot(services.ctx.db)
    with pytest.raises(Conflict) as err:
        await services.issues.claim(admin, c.id, agent="w1")
    assert err.value.message == f"issue {c.id} waits on unfinished dependencies: #{a.id}"
    assert err.value.details["waiting_on"] == [a.id]
    assert await snapshot(services.ctx.db) == before
    listed = await services.issues.list(admin, ready=True)
    assert [i.id for i in listed.items] == [a.id]
    # nor can it be started another way: taking it by update waits for the same dependencies
    w1 = Caller(credential_id=7, role=TokenRole.WORKER, project="default", agent="w1", label="w1")
    for start in (
        services.issues.update(w1, c.id, assignee="w1", status=IssueStatus.IN_PROGRESS),
        services.issues.update(admin, c.id, assignee="w1", status=IssueStatus.IN_PROGRESS),
    ):
        with pytest.raises(Conflict, match=f"issue {c.id} waits on unfinished dependencies: #{a.id}"):
            await start
    assert await snapshot(services.ctx.db) == before


async def test_an_issue_in_progress_keeps_finished_dependencies(services: Services, admin: Caller) -> None:
    """Neither reopening a dependency nor adding an unfinished one leaves an issue in progress that
    waits on something: both are a conflict naming what stands in the way."""
    await services.agents.register(admin, name="w1")
    a = await services.issues.create(admin, title="a")
    await services.issues.close(admin, a.id, "done")
    b = await services.issues.create(admin, title="b", depends_on=[a.id])
    await services.issues.claim(admin, b.id, agent="w1")
    other = await services.issues.create(admin, title="open one")
    before = await snapshot(services.ctx.db)

    for status in (IssueStatus.OPEN, IssueStatus.REVIEW, IssueStatus.BLOCKED):
        with pytest.raises(Conflict) as err:
            await services.issues.update(admin, a.id, status=status)
        assert err.value.message == (
            f"issue {a.id} cannot be reopened: issues in progress depend on it: #{b.id}; "
            "finish them or put them back to open first"
        )
        assert err.value.details == {"id": a.id, "dependants": [b.id]}
    with pytest.raises(Conflict) as err:
        await services.issues.update(admin, b.id, depends_on=[a.id, other.id])
    assert err.value.message == f"issue {b.id} waits on unfinished dependencies: #{other.id}"
    assert err.value.details["waiting_on"] == [other.id]
    assert await snapshot(services.ctx.db) == before

    # what is allowed: finished dependencies, an issue not in progress, a dependant let go first
    await services.issues.update(admin, b.id, depends_on=[a.id, other.id], status=IssueStatus.OPEN)
    await services.issues.update(admin, a.id, status=IssueStatus.OPEN)
    assert (await services.issues.get(admin, b.id)).issue.status == IssueStatus.OPEN


async def test_claiming_an_issue_assigned_to_you_starts_it(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    first = await services.issues.create(admin, title="first")
    assigned = await services.issues.create(admin, title="yours", assignee="w1")
    waiting = await services.issues.create(admin, title="later", assignee="w1", depends_on=[first.id])
    assert (assigned.status, assigned.assignee) == (IssueStatus.OPEN, "w1")
    started = await services.issues.claim(admin, assigned.id, agent="w1")
    assert (started.status, started.assignee, started.version) == (IssueStatus.IN_PROGRESS, "w1", 2)
    claimed = [e for e in (await services.events.page(admin, types=["issue.claimed"])).items]
    assert [e.payload["id"] for e in claimed] == [assigned.id]
    before = await snapshot(services.ctx.db)
    with pytest.raises(Conflict, match=f"waits on unfinished dependencies: #{first.id}"):
        await services.issues.claim(admin, waiting.id, agent="w1")
    again = await services.issues.claim(admin, assigned.id, agent="w1")  # a retry: unchanged
    assert (again.status, again.version) == (IssueStatus.IN_PROGRESS, 2)
    assert await snapshot(services.ctx.db) == before


async def test_claiming_a_taken_or_finished_issue_is_refused(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    await services.agents.register(admin, name="w2")
    taken = await services.issues.create(admin, title="taken")
    finished = await services.issues.create(admin, title="finished")
    await services.issues.claim(admin, taken.id, agent="w1")
    await services.issues.close(admin, finished.id, "dropped", status=IssueStatus.CLOSED)
    before = await snapshot(services.ctx.db)
    with pytest.raises(AlreadyClaimed, match=f"issue {taken.id} is already claimed by w1"):
        await services.issues.claim(admin, taken.id, agent="w2")
    with pytest.raises(Conflict, match=f"issue {finished.id} is closed, not open"):
        await services.issues.claim(admin, finished.id, agent="w2")
    with pytest.raises(NotFound, match="issue 999 does not exist"):
        await services.issues.claim(admin, 999, agent="w2")
    # finished by the agent that held it: it is done, not "claimed by w1" (an outside probe)
    done = await services.issues.create(admin, title="done")
    await services.issues.claim(admin, done.id, agent="w1")
    await services.issues.close(admin, done.id, "shipped", agent="w1")
    before = await snapshot(services.ctx.db)
    with pytest.raises(Conflict, match=f"issue {done.id} is done, not open") as refused:
        await services.issues.claim(admin, done.id, agent="w2")
    assert not isinstance(refused.value, AlreadyClaimed)
    with pytest.raises(NotFound, match="'ghost' is not registered"):
        await services.issues.claim(admin, taken.id, agent="ghost")
    # a retried claim of one's own issue answers it and changes nothing
    assert (await services.issues.claim(admin, taken.id, agent="w1")).assignee == "w1"
    assert await snapshot(services.ctx.db) == before


@pytest.mark.postgres
async def test_two_updates_closing_a_cycle_at_once_give_one_refusal_not_a_deadlock(
    postgres_url: str, tmp_path: Path, admin: Caller
) -> None:
    """x on y and y on x at once: each locked the other's issue, then waited for its own row, and
    PostgreSQL broke the deadlock (database_unavailable). One must win, the other be refused a cycle."""
    async with AsyncExitStack() as stack:
        runtimes: list[Runtime] = []
        for i in range(2):
            rt = Runtime(Settings(database_url=postgres_url, data_dir=tmp_path))
            await rt.start(apply_migrations=i == 0)
            stack.push_async_callback(rt.stop)
            runtimes.append(rt)
        one, two = (rt.services for rt in runtimes)
        for _ in range(8):
            x = await one.issues.create(admin, title="x")
            y = await one.issues.create(admin, title="y")
            await two.issues.get(admin, y.id)  # a connection open in both pools
            results = await asyncio.gather(
                one.issues.update(admin, x.id, depends_on=[y.id]),
                two.issues.update(admin, y.id, depends_on=[x.id]),
                return_exceptions=True,
            )
            wins, losses = split(results)
            assert len(wins) == 1 and len(losses) == 1, results
            assert isinstance(losses[0], InvalidInput), repr(losses[0])
            assert "would create a dependency cycle" in losses[0].message
