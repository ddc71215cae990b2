"""What the dashboard's overseer pages read and do, on SQLite and PostgreSQL: leases (and ending a
stale one, audited), mail threads (bodies by role), an agent's page, the dependency graph, search
and trends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.charts import Chart
from vibe_ensemble.domain.enums import AgentRole, Importance, Priority, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, PermissionDenied
from vibe_ensemble.services import Services


async def _caller(services: Services, admin: Caller, role: TokenRole, project: str | None = None) -> Caller:
    cred, _ = await services.tokens.create(admin, role=role, label=role.value, project=project)
    return await services.tokens.authenticate_session(cred.id, "")


async def _team(services: Services, admin: Caller) -> None:
    for name, role in (
        ("ada", AgentRole.COORDINATOR),
        ("brook", AgentRole.WORKER),
        ("cyd", AgentRole.WORKER),
    ):
        await services.agents.register(admin, name=name, role=role)


async def test_leases_soonest_first_filtered_by_holder_and_a_stale_one_ended_audited(
    services: Services, admin: Caller
) -> None:
    await _team(services, admin)
    await services.reservations.reserve(admin, ["src/a/**"], agent="brook", ttl_s=3600, reason="a")
    await services.reservations.reserve(admin, ["docs/**"], agent="cyd", ttl_s=600, exclusive=False)
    await services.reservations.reserve(admin, ["src/b.py"], agent="brook", ttl_s=60)
    await services.projects.create(admin, slug="other")
    await services.agents.register(admin, name="brook", project="other")
    await services.reservations.reserve(admin, ["elsewhere/**"], agent="brook", project="other")

    view = await services.oversight.leases(admin)
    assert [(x.holder, x.pattern) for x in view.leases] == [
        ("brook", "src/b.py"),
        ("cyd", "docs/**"),
        ("brook", "src/a/**"),
    ]
    assert view.holders == ["brook", "cyd"] and view.project == "default"
    assert [x.pattern for x in (await services.oversight.leases(admin, agent="brook")).leases] == [
        "src/b.py",
        "src/a/**",
    ]
    stale = view.leases[0]

    viewer = await _caller(services, admin, TokenRole.VIEWER)
    assert len((await services.oversight.leases(viewer)).leases) == 3
    for role in (TokenRole.VIEWER, TokenRole.WORKER):
        with pytest.raises(PermissionDenied):
            await services.oversight.revoke_lease(await _caller(services, admin, role), stale.id)
    coordinator = await _caller(services, admin, TokenRole.COORDINATOR)
    other = (await services.oversight.leases(admin, project="other")).leases[0]
    with pytest.raises(NotFound):  # another project's lease is not found through this one
        await services.oversight.revoke_lease(coordinator, other.id, project="default")
    ended = await services.oversight.revoke_lease(coordinator, stale.id, reason="stale")
    assert (ended.holder, ended.pattern) == ("brook", "src/b.py")
    assert [x.pattern for x in (await services.oversight.leases(admin)).leases] == ["docs/**", "src/a/**"]
    with pytest.raises(NotFound):
        await services.oversight.revoke_lease(coordinator, stale.id)

    audit = (await services.audit.page(admin, action="reservation.revoked")).items
    assert len(audit) == 1
    assert audit[0].actor == "token:coordinator"
    assert (audit[0].details["holder"], audit[0].details["pattern"]) == ("brook", "src/b.py")
    assert audit[0].details["reason"] == "stale"
    released = await services.events.recent(admin, types=["reservation.released"], limit=1)
    assert released[0].actor == "token:coordinator"
    assert released[0].payload == {
        "agent": "brook",
        "ids": [stale.id],
        "patterns": ["src/b.py"],
        "reason": "revoked",
    }

    scoped = await _caller(services, admin, TokenRole.ADMIN, project="other")
    with pytest.raises(PermissionDenied):
        await services.oversight.leases(scoped, project="default")


async def test_a_lease_that_refused_another_agents_reserve_is_contested(
    services: Services, admin: Caller
) -> None:
    await _team(services, admin)
    held = (await services.reservations.reserve(admin, ["src/a/**"], agent="brook")).granted[0]
    quiet = (await services.reservations.reserve(admin, ["docs/**"], agent="brook")).granted[0]
    for _ in range(2):  # refused twice, by brook's src/a/** (advisory: the rest would be granted)
        refused = await services.reservations.reserve(admin, ["src/a/x.py"], agent="cyd")
        assert refused.granted == [] and [c.holder for c in refused.conflicts] == ["brook"]

    view = await services.oversight.leases(admin)
    assert view.contested == {held.id: 2}
    assert quiet.id not in view.contested
    # Refusals older than the window do not count.
    assert (await services.oversight.leases(admin, window=timedelta(microseconds=1))).contested == {}


async def test_threads_newest_first_filtered_with_read_and_ack_state_and_bodies_by_role(
    services: Services, admin: Caller
) -> None:
    await _team(services, admin)
    s = services.messages
    plan = await s.send(
        admin, agent="ada", subject="Plan", body="Split the epic.", to=["brook", "cyd"], thread_id="plan"
    )
    await s.send(admin, agent="brook", subject="Re: Plan", body="Taking #2.", to=["ada"], thread_id="plan")
    freeze = await s.send(
        admin,
        agent="ada",
        subject="Freeze",
        body="secret freeze plan",
        to=["brook", "cyd"],
        importance=Importance.URGENT,
        ack_required=True,
    )
    await s.send(admin, subject="From a person", body="Hello team.", broadcast=True, overseer=True)
    await s.acknowledge(admin, [freeze.id], agent="brook")
    await s.mark_read(admin, [plan.id], agent="cyd")
    await services.projects.create(admin, slug="other")
    await services.agents.register(admin, name="zed", project="other")
    await services.agents.register(admin, name="yan", project="other")  # someone to receive it
    await s.send(admin, agent="zed", subject="Elsewhere", body="x", broadcast=True, project="other")

    threads = await services.threads.threads(admin)
    assert [t.subject for t in threads] == ["From a person", "Freeze", "Plan"]
    by_subject = {t.subject: t for t in threads}
    plan_t = by_subject["Plan"]
    assert (plan_t.messages, plan_t.participants, plan_t.last_sender) == (2, ["ada", "brook", "cyd"], "brook")
    assert by_subject["Freeze"].importance == Importance.URGENT and by_subject["Freeze"].unacked == 1
    assert by_subject["From a person"].participants == ["ada", "brook", "cyd", admin.display]
    assert [t.subject for t in await services.threads.threads(admin, unacked=True)] == ["Freeze"]
    assert [t.subject for t in await services.threads.threads(admin, importance=Importance.URGENT)] == [
        "Freeze"
    ]
    assert [t.subject for t in await services.threads.threads(admin, agent="brook")] == [
        "From a person",
        "Freeze",
        "Plan",
    ]
    assert await services.threads.threads(admin, agent="nobody") == []

    thread = await services.threads.thread(admin, "plan")
    assert thread.bodies and [m.body for m in thread.messages] == ["Split the epic.", "Taking #2."]
    first = thread.messages[0]
    assert [(d.recipient, d.read_at is not None, d.acked_at is not None) for d in first.deliveries] == [
        ("brook", False, False),
        ("cyd", True, False),
    ]
    frozen = (await services.threads.thread(admin, freeze.thread_id)).messages[0]
    assert [(d.recipient, d.acked_at is not None, d.read_at is not None) for d in frozen.deliveries] == [
        ("brook", True, True),
        ("cyd", False, False),
    ]
    assert not frozen.overseer
    overseer_thread = next(t for t in threads if t.subject == "From a person").thread_id
    assert (await services.threads.thread(admin, overseer_thread)).messages[0].overseer

    coordinator = await _caller(services, admin, TokenRole.COORDINATOR)
    assert (await services.threads.thread(coordinator, "plan")).messages[0].body == "Split the epic."
    for role in (TokenRole.VIEWER, TokenRole.WORKER):
        reader = await _caller(services, admin, role)
        hidden = await services.threads.thread(reader, "plan")
        assert not hidden.bodies and [m.body for m in hidden.messages] == [None, None]
        assert [m.subject for m in hidden.messages] == ["Plan", "Re: Plan"]
        assert len(await services.threads.threads(reader)) == 3
        # a search by someone who may not read bodies matches subjects only, and shows no snippet
        assert await services.threads.search(reader, "secret") == []
        assert [(h.subject, h.snippet) for h in await services.threads.search(reader, "freeze")] == [
            ("Freeze", "")
        ]
    hits = await services.threads.search(coordinator, "SECRET")
    assert [(h.subject, h.snippet) for h in hits] == [("Freeze", "«secret» freeze plan")]
    assert await services.threads.search(coordinator, "100%_") == []  # no such word; wildcards are words
    # (test_mail_search.py: ranking, snippets, scope and the index on both backends)

    with pytest.raises(NotFound):
        await services.threads.thread(admin, "plan", project="other")
    with pytest.raises(InvalidInput):
        await services.threads.thread(admin, "")
    with pytest.raises(InvalidInput):
        await services.threads.search(admin, "x" * 501)


async def test_an_agents_page_has_its_issues_leases_mail_and_events(
    services: Services, admin: Caller
) -> None:
    await _team(services, admin)
    mine = await services.issues.create(admin, title="Brook's work", agent="ada")
    await services.issues.claim(admin, mine.id, agent="brook")
    done = await services.issues.create(admin, title="Finished")
    await services.issues.claim(admin, done.id, agent="brook")
    await services.issues.close(admin, done.id, "done", agent="brook")
    await services.issues.create(admin, title="Someone else's")
    await services.reservations.reserve(admin, ["src/x/**"], agent="brook", reason="x")
    await services.reservations.reserve(admin, ["src/y/**"], agent="cyd")
    await services.messages.send(admin, agent="ada", subject="To brook", body="b", to=["brook"])
    await services.messages.send(admin, agent="ada", subject="To cyd", body="c", to=["cyd"])
    await services.agents.heartbeat(admin, agent="brook", activity="on it")

    viewer = await _caller(services, admin, TokenRole.VIEWER)
    view = await services.oversight.agent(viewer, "brook")
    assert (view.agent.name, view.agent.activity, view.unread) == ("brook", "on it", 1)
    assert [i.title for i in view.issues] == ["Brook's work"]
    assert [x.pattern for x in view.leases] == ["src/x/**"]
    assert [t.subject for t in view.threads] == ["To brook"]
    assert {e.type for e in view.events} >= {"issue.claimed", "reservation.granted", "agent.registered"}
    assert all(e.actor == "brook" or e.payload.get("agent") == "brook" for e in view.events)
    with pytest.raises(NotFound):
        await services.oversight.agent(viewer, "nobody")


async def test_the_dependency_graph_of_a_project_with_its_critical_path(
    services: Services, admin: Caller
) -> None:
    create = services.issues.create
    base = await create(admin, title="Schema")
    api = await create(admin, title="API", depends_on=[base.id])
    ui = await create(admin, title="UI", depends_on=[api.id])
    docs = await create(admin, title="Docs", depends_on=[base.id])
    lone = await create(admin, title="Alone", priority=Priority.P0)
    await services.agents.register(admin, name="ada")
    await services.issues.claim(admin, base.id, agent="ada")
    await services.issues.close(admin, base.id, "merged", agent="ada")
    await services.projects.create(admin, slug="other")
    await create(admin, title="Elsewhere", project="other")

    viewer = await _caller(services, admin, TokenRole.VIEWER)
    graph = await services.insight.graph(viewer)
    assert {n.issue.id for n in graph.nodes} == {base.id, api.id, ui.id, docs.id, lone.id}
    assert graph.critical == [api.id, ui.id]
    assert {(e.source, e.target) for e in graph.edges} == {
        (base.id, api.id),
        (api.id, ui.id),
        (base.id, docs.id),
    }
    assert [n.issue.id for n in graph.top_unblockers] == [api.id]
    assert graph.left_out == 0
    capped = await services.insight.graph(viewer, limit=1)  # the most urgent first
    assert [n.issue.id for n in capped.nodes] == [lone.id] and capped.left_out == 3
    assert [n.issue.title for n in (await services.insight.graph(admin, project="other")).nodes] == [
        "Elsewhere"
    ]


async def test_trends_count_issues_and_mail_per_utc_day(services: Services, admin: Caller) -> None:
    start = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    services.ctx.clock = lambda: start
    await services.agents.register(admin, name="ada")
    old = await services.issues.create(admin, title="Long ago")
    services.ctx.clock = lambda: start - timedelta(days=30)
    await services.issues.create(admin, title="Outside the window")
    services.ctx.clock = lambda: start + timedelta(hours=1)  # the next UTC day
    await services.issues.create(admin, title="Today")
    await services.issues.create(admin, title="Today too")
    await services.issues.claim(admin, old.id, agent="ada")
    await services.issues.close(admin, old.id, "done", agent="ada")
    await services.messages.send(admin, subject="s", body="b", broadcast=True)
    await services.projects.create(admin, slug="other")
    await services.issues.create(admin, title="Elsewhere", project="other")

    trends = await services.insight.trends(await _caller(services, admin, TokenRole.VIEWER), days=14)
    today, yesterday = date(2026, 3, 11), date(2026, 3, 10)
    assert trends.issues.days[-1] == today and len(trends.issues.days) == 14

    def value(chart: Chart, day: date, series: str) -> int:
        return next(b.value for b in chart.bars if b.day == day and b.series == series)

    assert (value(trends.issues, yesterday, "opened"), value(trends.issues, today, "opened")) == (1, 2)
    assert (value(trends.issues, yesterday, "finished"), value(trends.issues, today, "finished")) == (0, 1)
    assert trends.issues.total == {"opened": 3, "finished": 1}  # the issue 30 days ago is outside
    assert value(trends.mail, today, "messages") == 1 and trends.mail.total == {"messages": 1}
    assert trends.throughput.series == ["ada"] and value(trends.throughput, today, "ada") == 1
    assert (trends.other_agents, trends.other_finished) == (0, 0)
    with pytest.raises(InvalidInput):
        await services.insight.trends(admin, days=0)


async def test_throughput_draws_the_agents_who_finished_most_and_counts_the_rest(
    services: Services, admin: Caller
) -> None:
    names = [f"agent-{i}" for i in range(7)]
    for i, name in enumerate(names):
        await services.agents.register(admin, name=name)
        for _ in range(i + 1):  # agent-i finishes i + 1 issues
            issue = await services.issues.create(admin, title=f"work of {name}")
            await services.issues.claim(admin, issue.id, agent=name)
            await services.issues.close(admin, issue.id, "done", agent=name)
    unassigned = await services.issues.create(admin, title="nobody's")
    await services.issues.close(admin, unassigned.id, "not needed")  # no assignee: not counted
    await services.projects.create(admin, slug="other")
    await services.agents.register(admin, name="zed", project="other")
    elsewhere = await services.issues.create(admin, title="elsewhere", project="other")
    await services.issues.claim(admin, elsewhere.id, agent="zed", project="other")
    await services.issues.close(admin, elsewhere.id, "done", agent="zed", project="other")

    trends = await services.insight.trends(admin, days=7)
    assert trends.throughput.series == ["agent-6", "agent-5", "agent-4", "agent-3", "agent-2"]
    assert trends.throughput.total == {f"agent-{i}": i + 1 for i in range(2, 7)}
    assert (trends.other_agents, trends.other_finished) == (2, 1 + 2)
    assert trends.issues.total["finished"] == 28 + 1  # the issues chart counts every finished issue
    assert trends.throughput.maximum == 10  # 7, rounded up to a readable scale
