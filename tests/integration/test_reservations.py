"""Leases: grants and conflicts, strict mode, renewals, expiry, release, checks, idempotency, races."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, IssueStatus, ReserveMode, TokenRole
from vibe_ensemble.domain.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from vibe_ensemble.domain.models import ReservationResult
from vibe_ensemble.services import Services

from .snapshot import snapshot


def bound(name: str, role: TokenRole = TokenRole.WORKER) -> Caller:
    return Caller(credential_id=None, role=role, agent=name, label=name)


@pytest.fixture
async def team(services: Services, admin: Caller) -> Services:
    for name in ("ann", "bob", "cy"):
        await services.agents.register(admin, name=name)
    return services


async def event_types(services: Services, admin: Caller, prefix: str = "reservation.*") -> list[str]:
    return [e.type for e in (await services.events.page(admin, types=[prefix], limit=1000)).items]


async def test_grant_then_conflict_lists_holder_pattern_reason_and_expiry(team: Services) -> None:
    ann, bob = bound("ann"), bound("bob")
    first = await team.reservations.reserve(ann, ["src/**"], reason="refactor the api", ttl_s=600)
    assert [(r.holder, r.pattern, r.exclusive) for r in first.granted] == [("ann", "src/**", True)]
    assert first.conflicts == []
    lease = first.granted[0]
    assert lease.expires_at - lease.created_at == timedelta(seconds=600)

    second = await team.reservations.reserve(bob, ["src/api/app.py", "docs/*.md"])
    assert [r.pattern for r in second.granted] == ["docs/*.md"]  # advisory: what is free is granted
    [conflict] = second.conflicts
    assert (conflict.path, conflict.holder, conflict.pattern) == ("src/api/app.py", "ann", "src/**")
    assert conflict.reason == "refactor the api"
    assert conflict.expires_at == lease.expires_at
    assert conflict.exclusive and conflict.reservation_id == lease.id

    # the other way round: a narrow lease held blocks a broad request
    third = await team.reservations.reserve(ann, ["docs/**"])
    assert third.granted == []
    assert [(c.holder, c.pattern) for c in third.conflicts] == [("bob", "docs/*.md")]


async def test_strict_mode_grants_nothing_on_any_conflict(team: Services) -> None:
    await team.reservations.reserve(bound("ann"), ["src/a.py"])
    before = await snapshot(team.ctx.db)
    result = await team.reservations.reserve(bound("bob"), ["src/**", "docs/**"], mode=ReserveMode.STRICT)
    assert result.granted == []
    assert [c.path for c in result.conflicts] == ["src/**"]
    after = await snapshot(team.ctx.db)
    # no lease changed; the refusal itself is recorded (for the dashboard's "Needs attention")
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }
    added = after["events"][len(before["events"]) :]
    assert len(added) == 1 and "reservation.refused" in added[0] and "'source': 'strict'" in added[0]
    free = await team.reservations.reserve(bound("bob"), ["docs/**"], mode=ReserveMode.STRICT)
    assert [r.pattern for r in free.granted] == ["docs/**"]


async def test_shared_and_exclusive(team: Services) -> None:
    ann, bob, cy = bound("ann"), bound("bob"), bound("cy")
    assert (await team.reservations.reserve(ann, ["docs/**"], exclusive=False)).granted
    assert (await team.reservations.reserve(bob, ["docs/index.md"], exclusive=False)).granted
    # exclusive asks conflict with both shared holders
    refused = await team.reservations.reserve(cy, ["docs/index.md"])
    assert sorted(c.holder for c in refused.conflicts) == ["ann", "bob"]
    # and a shared ask conflicts with an exclusive holder
    await team.reservations.reserve(cy, ["service://staging-db"])
    shared = await team.reservations.reserve(
        ann, ["service://staging-db", "service://prod-db"], exclusive=False
    )
    assert [r.pattern for r in shared.granted] == ["service://prod-db"]
    assert [(c.holder, c.pattern) for c in shared.conflicts] == [("cy", "service://staging-db")]


async def test_own_leases_never_conflict_and_renewing_extends(team: Services) -> None:
    ann = bound("ann")
    t0 = team.ctx.clock()
    team.ctx.clock = lambda: t0
    first = await team.reservations.reserve(ann, ["src/**"], exclusive=False, ttl_s=60, reason="look")
    team.ctx.clock = lambda: t0 + timedelta(seconds=30)
    again = await team.reservations.reserve(ann, ["src/**", "src/a.py"], ttl_s=600, reason="edit")
    assert again.conflicts == []
    renewed = {r.pattern: r for r in again.granted}
    assert renewed["src/**"].id == first.granted[0].id  # the same lease, renewed
    assert renewed["src/**"].expires_at == t0 + timedelta(seconds=630)
    assert renewed["src/**"].exclusive and renewed["src/**"].reason == "edit"
    leases = await team.reservations.list(ann)
    assert sorted(r.pattern for r in leases) == ["src/**", "src/a.py"]
    granted = (await team.events.page(ann, types=["reservation.granted"])).items
    assert granted[-1].payload["renewed"] == ["src/**"]


async def test_expired_leases_release_themselves(team: Services, admin: Caller) -> None:
    ann, bob = bound("ann"), bound("bob")
    t0 = team.ctx.clock()
    team.ctx.clock = lambda: t0
    await team.reservations.reserve(ann, ["src/**", "docs/**"], ttl_s=60)
    team.ctx.clock = lambda: t0 + timedelta(seconds=59)
    assert len(await team.reservations.list(admin)) == 2
    team.ctx.clock = lambda: t0 + timedelta(seconds=60)
    assert await team.reservations.list(admin) == []  # readers never see an expired lease
    assert (await team.reservations.check(bob, ["src/a.py"])).conflicts == []
    assert [r.pattern for r in (await team.reservations.reserve(bob, ["src/a.py"])).granted] == ["src/a.py"]
    assert (await team.agents.heartbeat(ann)).expiring_reservations == []
    # the sweep records the expiry and announces it
    assert await team.reservations.sweep_expired() == 2
    assert await team.reservations.sweep_expired() == 0
    released = (await team.events.page(admin, types=["reservation.released"])).items
    assert [(e.payload["agent"], e.payload["reason"], sorted(e.payload["patterns"])) for e in released] == [
        ("ann", "expired", ["docs/**", "src/**"])
    ]


async def test_release_some_or_all(team: Services, admin: Caller) -> None:
    ann = bound("ann")
    await team.reservations.reserve(ann, ["src/**", "docs/**", "service://db"])
    some = await team.reservations.release(ann, ["./docs/**", "tests/**"])
    assert [r.pattern for r in some.released] == ["docs/**"]
    assert some.not_held == ["tests/**"]
    assert sorted(r.pattern for r in await team.reservations.list(admin)) == ["service://db", "src/**"]
    rest = await team.reservations.release(ann)
    assert sorted(r.pattern for r in rest.released) == ["service://db", "src/**"]
    assert await team.reservations.list(admin) == []
    assert (await team.reservations.release(ann)).released == []
    released = (await team.events.page(admin, types=["reservation.released"])).items
    assert [sorted(e.payload["patterns"]) for e in released] == [["docs/**"], ["service://db", "src/**"]]
    with pytest.raises(InvalidInput) as exc:
        await team.reservations.release(ann, [])
    assert exc.value.field == "paths"


async def test_check_is_read_only_and_ignores_own_leases(team: Services, admin: Caller) -> None:
    await team.reservations.reserve(bound("ann"), ["src/**"], reason="api work")
    await team.reservations.reserve(bound("bob"), ["docs/**"], exclusive=False)
    before = await snapshot(team.ctx.db)
    viewer = Caller(credential_id=None, role=TokenRole.VIEWER)
    check = await team.reservations.check(viewer, ["src/a.py", "docs/x.md", "README.md"])
    assert [(c.path, c.holder) for c in check.conflicts] == [("src/a.py", "ann"), ("docs/x.md", "bob")]
    assert check.free == ["README.md"]
    # only exclusive holders matter to a shared ask (and to the commit guard)
    shared = await team.reservations.check(viewer, ["src/a.py", "docs/x.md"], exclusive=False)
    assert [c.holder for c in shared.conflicts] == ["ann"] and shared.free == ["docs/x.md"]
    # one's own leases never conflict
    own = await team.reservations.check(bound("ann"), ["src/a.py"])
    assert own.conflicts == [] and own.free == ["src/a.py"]
    assert await snapshot(team.ctx.db) == before
    with pytest.raises(PermissionDenied):
        await team.reservations.reserve(viewer, ["x.py"], agent="ann")


async def test_retired_agents_leases_are_released(team: Services, admin: Caller) -> None:
    await team.reservations.reserve(bound("ann"), ["src/**"])
    await team.agents.retire(admin, name="ann")
    assert await team.reservations.list(admin) == []
    assert (await team.reservations.reserve(bound("bob"), ["src/a.py"])).granted


async def test_retiring_an_agent_puts_all_its_unfinished_work_back_in_the_pool(
    team: Services, admin: Caller
) -> None:
    """An issue assigned to a retired agent, open or in progress or blocked, is unassigned (in
    progress back to open): another agent can claim it. Its finished and in-review issues keep it."""
    made = {}
    for status in ("open", "in_progress", "blocked", "review", "done"):
        issue = await team.issues.create(admin, title=f"{status} work", assignee="ann")
        if status != "open":
            issue = await team.issues.update(admin, issue.id, status=IssueStatus(status))
        made[status] = issue.id
    await team.agents.retire(admin, name="ann")
    after = {s: (await team.issues.get(admin, i)).issue for s, i in made.items()}
    assert {s: (i.status.value, i.assignee) for s, i in after.items()} == {
        "open": ("open", None),
        "in_progress": ("open", None),
        "blocked": ("blocked", None),
        "review": ("review", "ann"),
        "done": ("done", "ann"),
    }
    retired = await team.events.recent(admin, types=["agent.retired"])
    assert [e.payload["reopened_issues"] for e in retired] == [
        sorted([made["open"], made["in_progress"], made["blocked"]])
    ]
    claimed = await team.issues.claim(bound("bob"), made["open"])
    assert claimed.assignee == "bob"


async def test_retirement_is_sticky_until_a_coordinator_reinstates(team: Services, admin: Caller) -> None:
    await team.agents.retire(admin, name="ann")
    before = await snapshot(team.ctx.db)
    for caller in (bound("ann"), Caller(credential_id=None, role=TokenRole.WORKER, label="team")):
        with pytest.raises(PermissionDenied, match="only a coordinator or admin can reinstate it"):
            await team.agents.register(caller, name="ann")
    with pytest.raises(NotFound, match="is retired"):  # a retired agent cannot lease either
        await team.reservations.reserve(bound("ann"), ["src/a.py"])
    assert await snapshot(team.ctx.db) == before
    coordinator = Caller(credential_id=None, role=TokenRole.COORDINATOR, label="lead")
    back = await team.agents.register(coordinator, name="ann")
    assert back.retired_at is None
    assert (await team.reservations.reserve(bound("ann"), ["src/a.py"])).granted


async def test_a_worker_token_cannot_demote_a_coordinator_by_registering_its_name(
    team: Services, admin: Caller
) -> None:
    lead = Caller(credential_id=None, role=TokenRole.COORDINATOR, label="lead")
    await team.agents.register(lead, name="boss", role=AgentRole.COORDINATOR, description="runs the team")
    before = await snapshot(team.ctx.db)
    for caller in (bound("boss"), Caller(credential_id=None, role=TokenRole.WORKER, label="team")):
        with pytest.raises(PermissionDenied, match="'boss' is a coordinator; only a coordinator or admin"):
            await team.agents.register(caller, name="boss", description="demoted")
    assert await snapshot(team.ctx.db) == before
    again = await team.agents.register(lead, name="boss", role=AgentRole.COORDINATOR)
    assert again.role == AgentRole.COORDINATOR
    worker = await team.agents.register(bound("ann"), name="ann", description="re-attached")
    assert worker.description == "re-attached"  # a worker still re-attaches to its own name


async def test_idempotency_key_replays_the_first_result(team: Services, admin: Caller) -> None:
    ann, bob = bound("ann"), bound("bob")
    first = await team.reservations.reserve(ann, ["src/**"], idempotency_key="k-1")
    await team.reservations.reserve(bob, ["docs/**"])  # the world changes meanwhile
    retry = await team.reservations.reserve(ann, ["src/**"], idempotency_key="k-1")
    assert isinstance(retry, ReservationResult)
    assert retry == first
    assert len(await team.reservations.list(admin, holder="ann")) == 1
    assert (await event_types(team, admin)).count("reservation.granted") == 2
    with pytest.raises(Conflict) as exc:
        await team.reservations.reserve(ann, ["docs/**"], idempotency_key="k-1")
    assert "different arguments" in exc.value.message
    # keys are per agent: the same key from bob is a new request
    other = await team.reservations.reserve(bob, ["tests/**"], idempotency_key="k-1")
    assert [r.pattern for r in other.granted] == ["tests/**"]


async def test_a_replay_does_not_grant_a_lease_that_has_ended_since(team: Services, admin: Caller) -> None:
    """A retry after the lease was released (and taken by another) must not tell the agent it holds
    it: the replay lists only the leases still held, and says which ended."""
    ann, bob = bound("ann"), bound("bob")
    first = await team.reservations.reserve(ann, ["src/a.py", "src/b.py"], idempotency_key="k-2")
    assert [r.pattern for r in first.granted] == ["src/a.py", "src/b.py"]
    await team.reservations.release(ann, ["src/a.py"])
    taken = await team.reservations.reserve(bob, ["src/a.py"])
    assert [r.pattern for r in taken.granted] == ["src/a.py"]
    retry = await team.reservations.reserve(ann, ["src/a.py", "src/b.py"], idempotency_key="k-2")
    assert retry.granted == [first.granted[1]]
    assert retry.warnings == [
        "'src/a.py': the lease the first call with this idempotency_key granted has ended since"
        " (released or expired): you do not hold it; reserve it again with a new key"
    ]
    assert [r.holder for r in await team.reservations.list(admin)] == ["ann", "bob"]


BAD_INPUT: list[tuple[dict[str, object], str, str]] = [
    ({"paths": ["/etc/passwd"]}, "paths[0]", "relative to the repository root"),
    ({"paths": ["src/a.py", "../x"]}, "paths[1]", "'..'"),
    ({"paths": ["**"]}, "paths[0]", "whole repository"),
    ({"paths": ["*"]}, "paths[0]", "whole repository"),
    ({"paths": []}, "paths", "at least one"),
    ({"paths": [f"f{i}" for i in range(101)]}, "paths", "at most 100"),
    ({"paths": ["a.py"], "ttl_s": 0}, "ttl_s", "between"),
    ({"paths": ["a.py"], "ttl_s": 86_401}, "ttl_s", "between"),
    ({"paths": ["a.py"], "reason": "x" * 1001}, "reason", "at most"),
    ({"paths": ["a.py"], "idempotency_key": " "}, "idempotency_key", "empty"),
]


async def test_bad_input_is_refused_and_changes_nothing(team: Services) -> None:
    before = await snapshot(team.ctx.db)
    for kwargs, field, rule in BAD_INPUT:
        with pytest.raises(InvalidInput) as exc:
            await team.reservations.reserve(bound("ann"), **kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field
        assert rule in exc.value.rule
    assert await snapshot(team.ctx.db) == before


async def test_normalised_patterns_come_with_a_warning(team: Services) -> None:
    result = await team.reservations.reserve(bound("ann"), ["./src//api/", "src/api"])
    assert [r.pattern for r in result.granted] == ["src/api"]
    assert result.warnings == ["'./src//api/' was normalised to 'src/api'"]


RACERS = 50


async def test_fifty_concurrent_exclusive_requests_give_exactly_one_holder(
    services: Services, admin: Caller
) -> None:
    names = [f"racer-{i:02d}" for i in range(RACERS)]
    for name in names:
        await services.agents.register(admin, name=name)
    # every request overlaps every other one
    wanted = ["src/**", "src/core/app.py", "src/core/*.py", "src", "**/app.py"]
    results = await asyncio.gather(
        *(services.reservations.reserve(bound(n), [wanted[i % len(wanted)]]) for i, n in enumerate(names))
    )
    winners = [r for r in results if r.granted]
    assert len(winners) == 1
    winner = winners[0].granted[0].holder
    live = await services.reservations.list(admin)
    assert {r.holder for r in live} == {winner} and len(live) == 1
    for r in results:
        if not r.granted:
            assert [c.holder for c in r.conflicts] == [winner]
    assert (await event_types(services, admin)).count("reservation.granted") == 1


# --- costly comparisons: bounded, refused past the budget, never on the event loop ---------------


async def test_comparing_patterns_runs_off_the_event_loop(
    team: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import wait_until
    from vibe_ensemble.services import lease_conflicts

    await team.reservations.reserve(bound("ann"), ["src/*a" + "?" * 20])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    real = lease_conflicts.conflicts_with

    def spy(*args: object, **kwargs: object) -> object:
        at_entry = ticks
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        # on the loop's own thread the ticker could not run until this returned
        wait_until(lambda: ticks > at_entry + 2, timeout=10, what="the event loop to run meanwhile")
        return found

    monkeypatch.setattr(lease_conflicts, "conflicts_with", spy)
    task = asyncio.create_task(ticker())
    try:
        check = await team.reservations.check(bound("bob"), ["src/*b" + "?" * 20 + "c"])
        result = await team.reservations.reserve(bound("cy"), ["src/xa" + "?" * 20])
    finally:
        task.cancel()
    assert [c.holder for c in check.conflicts] == ["ann"]
    assert [c.holder for c in result.conflicts] == ["ann"]


async def test_a_comparison_past_the_work_budget_is_refused_naming_the_pattern(
    team: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vibe_ensemble.domain import overlap

    await team.reservations.reserve(bound("ann"), ["src/*" + "a" * 60 + "*" + "a" * 60])
    before = await snapshot(team.ctx.db)
    monkeypatch.setattr(overlap, "WORK_BUDGET", 200)
    wanted = "src/*" + "a" * 50 + "*" + "a" * 50 + "*"
    for call in (
        team.reservations.check(bound("bob"), [wanted]),
        team.reservations.reserve(bound("bob"), [wanted]),
    ):
        with pytest.raises(InvalidInput) as exc:
            await call
        assert exc.value.field == "paths"
        assert wanted in exc.value.rule and "too complex" in exc.value.rule
    assert await snapshot(team.ctx.db) == before


async def test_a_call_past_its_total_budget_is_refused(
    team: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vibe_ensemble.services import lease_conflicts

    await team.reservations.reserve(bound("ann"), ["src/*a*b*c"])
    monkeypatch.setattr(lease_conflicts, "CALL_BUDGET", 500)
    with pytest.raises(InvalidInput) as exc:
        await team.reservations.check(bound("bob"), [f"src/*{i}*" for i in range(200)])
    assert exc.value.field == "paths" and "fewer patterns per call" in exc.value.rule


async def test_leases_are_sifted_by_pattern_and_read_whole_in_batches(
    team: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reservation reads every live lease as a narrow row, keeps those whose pattern may overlap,
    and reads only those whole, in batches: what stands in the way is found across batches, and
    leases of other directories, the caller's own and (for a shared request) shared ones never are."""
    from vibe_ensemble.services import lease_conflicts
    from vibe_ensemble.store import reservations as store

    monkeypatch.setattr(lease_conflicts, "READ_BATCH", 2)
    ann, bob, cy = bound("ann"), bound("bob"), bound("cy")
    await team.reservations.reserve(ann, [f"src/mod{i}/a.py" for i in range(5)] + ["docs/**"])
    [cys] = (await team.reservations.reserve(cy, ["src/mod9/**"], exclusive=False)).granted
    await team.reservations.reserve(bob, ["src/mod3/b.py"])  # bob's own: never in his way
    read_whole: list[list[int]] = []
    real = store.by_ids

    async def spy(conn: object, ids: list[int]) -> object:
        read_whole.extend([ids] if ids else [])
        return await real(conn, ids)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "by_ids", spy)
    result = await team.reservations.reserve(bob, ["src/**"], mode=ReserveMode.STRICT)
    assert sorted(c.pattern for c in result.conflicts) == [
        *(f"src/mod{i}/a.py" for i in range(5)),
        "src/mod9/**",
    ]
    assert [len(ids) for ids in read_whole] == [2, 2, 2]  # six leases in src/, none of docs/ or bob's
    read_whole.clear()
    shared = await team.reservations.reserve(bob, ["src/mod9/x.py"], exclusive=False)
    assert [r.pattern for r in shared.granted] == ["src/mod9/x.py"] and shared.conflicts == []
    assert not any(cys.id in ids for ids in read_whole)  # cy's shared lease was not read whole
    check = await team.reservations.check(bob, ["src/mod3/**"])
    assert [(c.holder, c.pattern) for c in check.conflicts] == [("ann", "src/mod3/a.py")]


async def test_a_release_of_many_leases_is_told_in_events_of_at_most_500(
    team: Services, admin: Caller
) -> None:
    """A release of 15,000 leases was one `reservation.released` event of 1.5 MB, past the 1 MiB a
    WebSocket client takes by default: it is told in events of at most RELEASED_PER_EVENT ids."""
    from vibe_ensemble.services import reservations

    ann = bound("ann")
    for start in range(0, 1100, 100):
        await team.reservations.reserve(ann, [f"src/m{i}.py" for i in range(start, start + 100)])
    released = await team.reservations.release(ann)
    assert len(released.released) == 1100
    told = [
        e.payload for e in (await team.events.page(admin, types=["reservation.released"], limit=1000)).items
    ]
    assert [len(p["ids"]) for p in told] == [500, 500, 100]
    assert reservations.RELEASED_PER_EVENT == 500
    assert sorted(i for p in told for i in p["ids"]) == sorted(r.id for r in released.released)


async def test_spaces_cut_from_a_pattern_come_with_a_warning(team: Services) -> None:
    """A git path may begin with a space: ' src/x.py' leased as 'src/x.py' is said, not done silently."""
    result = await team.reservations.reserve(bound("ann"), [" src/x.py", "src/y.py ", " service://db"])
    assert [r.pattern for r in result.granted] == ["src/x.py", "src/y.py", "service://db"]
    assert result.warnings == [
        "' src/x.py' was normalised to 'src/x.py'",
        "'src/y.py ' was normalised to 'src/y.py'",
        "' service://db' was normalised to 'service://db'",
    ]


async def test_a_check_acts_only_as_an_agent_the_token_may_speak_for_and_reports_nothing_else(
    team: Services, admin: Caller
) -> None:
    """A commit guard's report names the agent refused: a worker team token put "overseer", a
    coordinator, a retired agent or a name never registered on `reservation.refused` events."""
    await team.agents.register(admin, name="lead", role=AgentRole.COORDINATOR)
    await team.agents.register(admin, name="gone")
    await team.agents.retire(admin, name="gone")
    await team.reservations.reserve(bound("bob"), ["lib/**"])
    worker_team = Caller(credential_id=None, role=TokenRole.WORKER, label="team")
    before = await event_types(team, admin)
    for agent, error in (
        ("ghost", NotFound),
        ("overseer", NotFound),
        ("gone", NotFound),
        ("lead", PermissionDenied),
    ):
        with pytest.raises(error):
            await team.reservations.check(worker_team, ["lib/x.py"], agent=agent, report=True, files=True)
    with pytest.raises(NotFound):
        await team.reservations.check(bound("gone"), ["lib/x.py"], report=True, files=True)
    assert await event_types(team, admin) == before  # nothing reported

    found = await team.reservations.check(worker_team, ["lib/x.py"], agent="ann", report=True, files=True)
    assert [c.holder for c in found.conflicts] == ["bob"]
    assert await event_types(team, admin) == [*before, "reservation.refused"]


async def test_a_lease_reason_is_one_line(team: Services) -> None:
    """A reason is shown in a hook's denial and on the dashboard's one-line rows."""
    with pytest.raises(InvalidInput, match="reason: must be one line without control characters"):
        await team.reservations.reserve(bound("ann"), ["a.py"], reason="first\nsecond")
    assert (await team.reservations.reserve(bound("ann"), ["a.py"], reason="  why  ")).granted[
        0
    ].reason == "why"
