"""A lease may name the issue it serves: stored, returned, announced, validated, shown to overseers;
closing the issue leaves its leases alone. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus, TokenRole
from vibe_ensemble.domain.errors import Conflict, InvalidInput
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.services import Services

from .snapshot import snapshot


def bound(name: str) -> Caller:
    return Caller(credential_id=None, role=TokenRole.WORKER, agent=name, label=name)


@pytest.fixture
async def team(services: Services, admin: Caller) -> Services:
    for name in ("ann", "bob"):
        await services.agents.register(admin, name=name)
    return services


async def granted_payloads(services: Services, admin: Caller) -> list[dict[str, object]]:
    page = await services.events.page(admin, types=["reservation.granted"], limit=100)
    return [dict(e.payload) for e in page.items]


async def test_a_lease_names_its_issue_in_the_result_the_list_and_the_event(
    team: Services, admin: Caller
) -> None:
    issue = await team.issues.create(admin, title="rewrite the parser")
    result = await team.reservations.reserve(
        bound("ann"), ["src/parser/**", "docs/parser.md"], issue=issue.id
    )
    assert [(r.pattern, r.issue) for r in result.granted] == [
        ("src/parser/**", issue.id),
        ("docs/parser.md", issue.id),
    ]
    listed = await team.reservations.list(admin, holder="ann")
    assert sorted((r.pattern, r.issue) for r in listed) == [
        ("docs/parser.md", issue.id),
        ("src/parser/**", issue.id),
    ]
    [event] = await granted_payloads(team, admin)
    assert event["issue"] == issue.id and event["patterns"] == ["src/parser/**", "docs/parser.md"]

    # a lease without an issue says so (null), in the record and the event
    plain = await team.reservations.reserve(bound("bob"), ["tests/**"])
    assert plain.granted[0].issue is None
    assert (await granted_payloads(team, admin))[-1]["issue"] is None


async def test_renewing_replaces_the_issue_as_it_replaces_the_reason(team: Services, admin: Caller) -> None:
    first = await team.issues.create(admin, title="first")
    second = await team.issues.create(admin, title="second")
    ann = bound("ann")
    lease = (await team.reservations.reserve(ann, ["src/a.py"], issue=first.id)).granted[0]
    renewed = (await team.reservations.reserve(ann, ["src/a.py"], issue=second.id)).granted[0]
    assert (renewed.id, renewed.issue) == (lease.id, second.id)
    cleared = (await team.reservations.reserve(ann, ["src/a.py"])).granted[0]
    assert (cleared.id, cleared.issue) == (lease.id, None)
    assert [r.issue for r in await team.reservations.list(admin, holder="ann")] == [None]


async def test_an_unknown_or_foreign_issue_is_refused_naming_the_field_and_changes_nothing(
    team: Services, admin: Caller
) -> None:
    await team.projects.create(admin, slug="other")
    foreign = await team.issues.create(admin, title="elsewhere", project="other")
    mine = await team.issues.create(admin, title="here")
    before = await snapshot(team.ctx.db)
    for bad, rule in (
        (mine.id + 1000, f"no such issue in this project: {mine.id + 1000}"),
        (foreign.id, f"no such issue in this project: {foreign.id}"),
        (0, "between 1 and"),
        (MAX_ID + 1, "between 1 and"),
    ):
        with pytest.raises(InvalidInput) as exc:
            await team.reservations.reserve(bound("ann"), ["src/a.py"], issue=bad)
        assert (exc.value.field, exc.value.code) == ("issue", "invalid_input")
        assert rule in exc.value.rule
    assert await snapshot(team.ctx.db) == before


async def test_an_idempotency_key_reused_with_another_issue_is_a_conflict(
    team: Services, admin: Caller
) -> None:
    one = await team.issues.create(admin, title="one")
    two = await team.issues.create(admin, title="two")
    first = await team.reservations.reserve(bound("ann"), ["src/a.py"], issue=one.id, idempotency_key="k")
    again = await team.reservations.reserve(bound("ann"), ["src/a.py"], issue=one.id, idempotency_key="k")
    assert again == first and again.granted[0].issue == one.id
    with pytest.raises(Conflict):
        await team.reservations.reserve(bound("ann"), ["src/a.py"], issue=two.id, idempotency_key="k")


async def test_closing_the_issue_leaves_its_leases_held_and_naming_it(team: Services, admin: Caller) -> None:
    issue = await team.issues.create(admin, title="short job")
    await team.reservations.reserve(bound("ann"), ["src/a.py"], issue=issue.id)
    await team.issues.close(admin, issue.id, "done")
    [lease] = await team.reservations.list(admin, holder="ann")
    assert lease.issue == issue.id
    # a finished issue may still be named (a follow-up touch of its files)
    again = await team.reservations.reserve(bound("bob"), ["docs/a.md"], issue=issue.id)
    assert again.granted[0].issue == issue.id


async def test_the_overseer_views_carry_the_issues_the_leases_serve(team: Services, admin: Caller) -> None:
    issue = await team.issues.create(admin, title="auth <refactor>")
    await team.reservations.reserve(bound("ann"), ["src/auth/**"], issue=issue.id)
    await team.reservations.reserve(bound("ann"), ["docs/auth.md"])
    await team.reservations.reserve(bound("bob"), ["tests/**"])

    view = await team.oversight.leases(admin)
    assert sorted((r.holder, r.pattern, r.issue) for r in view.leases) == [
        ("ann", "docs/auth.md", None),
        ("ann", "src/auth/**", issue.id),
        ("bob", "tests/**", None),
    ]
    assert {i: v.title for i, v in view.issues.items()} == {issue.id: "auth <refactor>"}
    only_bob = await team.oversight.leases(admin, agent="bob")
    assert only_bob.issues == {}

    page = await team.oversight.agent(admin, "ann")
    assert sorted((r.pattern, r.issue) for r in page.leases) == [
        ("docs/auth.md", None),
        ("src/auth/**", issue.id),
    ]
    assert list(page.lease_issues) == [issue.id]
    assert page.lease_issues[issue.id].status == IssueStatus.OPEN
