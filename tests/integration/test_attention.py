"""The "Needs attention" rules and the release action, over the services, on SQLite and PostgreSQL.

The services' clock is moved forward to cross each threshold (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vibe_ensemble.domain.attention import AttentionRules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus, IssueStatus, ReserveMode, TokenRole
from vibe_ensemble.domain.errors import Conflict, PermissionDenied
from vibe_ensemble.services import Services

from .snapshot import snapshot

RULES = AttentionRules(
    silent_after=timedelta(seconds=120),
    ack_after=timedelta(minutes=10),
    lease_warning=timedelta(minutes=5),
    conflict_window=timedelta(minutes=30),
)


def later(services: Services, **delta: float) -> None:
    """Move the services' clock forward from now."""
    services.ctx.clock = lambda: datetime.now(UTC) + timedelta(**delta)


async def token(services: Services, admin: Caller, role: TokenRole) -> Caller:
    cred, _ = await services.tokens.create(admin, role=role, label=role.value)
    return await services.tokens.authenticate_session(cred.id, "")


async def test_a_quiet_project_needs_nothing(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ana")
    found = await services.attention.overview(admin, rules=RULES)
    assert found.total == 0 and found.recheck_at is None


async def test_silent_holders_and_leases_ending_under_work(services: Services, admin: Caller) -> None:
    for name in ("sam", "eve", "ida"):
        await services.agents.register(admin, name=name)
        await services.agents.heartbeat(admin, agent=name, status=AgentStatus.WORKING)
    held = await services.issues.create(admin, title="Importer")
    await services.issues.claim(admin, held.id, agent="sam")
    await services.reservations.reserve(admin, ["src/importer/**"], agent="sam", ttl_s=3600)
    await services.reservations.reserve(admin, ["src/api/**"], agent="eve", ttl_s=240)
    await services.reservations.reserve(admin, ["docs/**"], agent="ida", ttl_s=3600)

    now = await services.attention.overview(admin, rules=RULES)
    assert now.silent == []
    assert [(e.lease.holder, e.lease.pattern) for e in now.expiring] == [("eve", "src/api/**")]
    assert now.recheck_at is not None  # sam and ida fall silent, ida's lease enters its warning window

    later(services, seconds=121)  # nobody sent a heartbeat since
    found = await services.attention.overview(admin, rules=RULES)
    silent = {s.agent: s for s in found.silent}
    assert set(silent) == {"sam", "eve", "ida"}  # every one of them holds an issue or a lease
    assert [i.id for i in silent["sam"].issues] == [held.id]
    assert [r.pattern for r in silent["sam"].leases] == ["src/importer/**"]
    assert found.expiring == []  # a silent holder is listed once, as silent


async def test_blocked_issues_say_why_and_on_what(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="ana")
    base = await services.issues.create(admin, title="Schema")
    await services.issues.claim(admin, base.id, agent="ana")
    waiting = await services.issues.create(admin, title="Backfill", depends_on=[base.id])
    marked = await services.issues.create(admin, title="Deploy")
    await services.issues.update(admin, marked.id, status=IssueStatus.BLOCKED)
    await services.issues.comment(admin, marked.id, body="first")
    await services.issues.comment(admin, marked.id, body="No staging credentials yet.")
    found = await services.attention.overview(admin, rules=RULES)
    by_id = {b.issue.id: b for b in found.blocked}
    assert set(by_id) == {waiting.id, marked.id} and found.blocked_total == 2
    assert [(d.id, d.status, d.assignee) for d in by_id[waiting.id].waits_on] == [
        (base.id, IssueStatus.IN_PROGRESS, "ana")
    ]
    assert (by_id[marked.id].marked, by_id[marked.id].reason) == (True, "No staging credentials yet.")
    await services.issues.close(admin, base.id, resolution="done")
    assert [b.issue.id for b in (await services.attention.overview(admin, rules=RULES)).blocked] == [
        marked.id
    ]


async def test_mail_waiting_for_an_acknowledgement(services: Services, admin: Caller) -> None:
    for name in ("ada", "bo", "cy"):
        await services.agents.register(admin, name=name)
    sent = await services.messages.send(
        admin, subject="Freeze", body="ack", to=["bo", "cy"], ack_required=True, agent="ada"
    )
    await services.messages.send(admin, subject="FYI", body="no ack asked", to=["bo"], agent="ada")
    fresh = await services.attention.overview(admin, rules=RULES)
    assert fresh.unacked == []
    assert fresh.recheck_at is not None
    assert abs((fresh.recheck_at - (sent.created_at + RULES.ack_after)).total_seconds()) < 1

    later(services, minutes=11)
    found = await services.attention.overview(admin, rules=RULES)
    assert [(m.message_id, m.waiting_on) for m in found.unacked] == [(sent.id, ["bo", "cy"])]
    await services.messages.acknowledge(admin, [sent.id], agent="bo")
    assert (await services.attention.overview(admin, rules=RULES)).unacked[0].waiting_on == ["cy"]
    await services.messages.acknowledge(admin, [sent.id], agent="cy")
    assert (await services.attention.overview(admin, rules=RULES)).unacked == []


async def test_refused_leases_and_commits_are_recorded_and_shown(services: Services, admin: Caller) -> None:
    for name in ("eve", "ana"):
        await services.agents.register(admin, name=name)
    await services.reservations.reserve(admin, ["src/api/**"], agent="eve")
    strict = await services.reservations.reserve(
        admin, ["src/api/a.py", "lib/x.py"], agent="ana", mode=ReserveMode.STRICT
    )
    assert strict.granted == []
    advisory = await services.reservations.reserve(admin, ["src/api/b.py", "lib/y.py"], agent="ana")
    assert [r.pattern for r in advisory.granted] == ["lib/y.py"]
    viewer = await token(services, admin, TokenRole.VIEWER)
    await services.reservations.check(viewer, ["src/api/c.py"], agent="ana", exclusive=False, report=True)
    await services.reservations.check(admin, ["src/api/d.py"], agent="ana", exclusive=False)  # not a report
    await services.reservations.check(admin, ["src/api/e.py"], agent="ana", exclusive=False, report=True)

    found = await services.attention.overview(admin, rules=RULES)
    assert [(c.source, c.agent, c.paths, c.holders) for c in found.conflicts] == [
        ("guard", "ana", ["src/api/e.py"], ["eve"]),
        ("advisory", "ana", ["src/api/b.py"], ["eve"]),
        ("strict", "ana", ["src/api/a.py", "lib/x.py"], ["eve"]),
    ]
    later(services, minutes=31)
    assert (await services.attention.overview(admin, rules=RULES)).conflicts == []


async def test_release_frees_the_work_and_is_audited(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="gone")
    held = await services.issues.create(admin, title="Refactor")
    await services.issues.claim(admin, held.id, agent="gone")
    await services.reservations.reserve(admin, ["lib/**"], agent="gone")
    for role in (TokenRole.VIEWER, TokenRole.WORKER):
        with pytest.raises(PermissionDenied):
            await services.attention.release(await token(services, admin, role), name="gone")
    lead = await token(services, admin, TokenRole.COORDINATOR)
    # not silent (seen just now): a page drawn while it was silent must not release a live agent's work
    before = await snapshot(services.ctx.db)
    with pytest.raises(Conflict, match="gone is not silent any more"):
        await services.attention.release(lead, name="gone")
    assert await snapshot(services.ctx.db) == before
    later(services, minutes=3)  # past silent_after (120 s) without a heartbeat
    assert await services.attention.release(lead, name="gone") == (1, [held.id])

    issue = (await services.issues.get(admin, held.id)).issue
    assert (issue.status, issue.assignee) == (IssueStatus.OPEN, None)
    assert await services.reservations.list(admin) == []
    agent = (await services.agents.list(admin))[0]
    assert agent.name == "gone" and agent.retired_at is None  # still registered
    events = await services.events.recent(admin, types=["agent.released"])
    assert events[0].payload == {"agent": "gone", "released_reservations": 1, "reopened_issues": [held.id]}
    entries = (await services.audit.page(admin, action="agent.work_released")).items
    assert entries[0].actor == "token:coordinator" and entries[0].details["agent"] == "gone"
    assert await services.attention.release(lead, name="gone") == (0, [])  # nothing left: no harm


async def test_every_role_may_read_the_panel(services: Services, admin: Caller) -> None:
    for role in TokenRole:
        await services.attention.overview(await token(services, admin, role), rules=RULES)
