"""Who a call acts as: a bound token is its agent and no other; a team token names the agent."""

from __future__ import annotations

import asyncio

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, KnowledgeKind, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from vibe_ensemble.services import Services

from .snapshot import snapshot

W1 = Caller(credential_id=11, role=TokenRole.WORKER, project="default", agent="w1", label="w1")
TEAM = Caller(credential_id=12, role=TokenRole.WORKER, label="team")


@pytest.fixture
async def setup(services: Services, admin: Caller) -> int:
    """w1 and w2 registered, one issue; returns its id."""
    await services.agents.register(W1)  # a bound token registers under its own name
    await services.agents.register(admin, name="w2")
    return (await services.issues.create(admin, title="job")).id


async def test_bound_agent_cannot_act_as_another(services: Services, setup: int) -> None:
    issue_id = setup
    await services.messages.send(TEAM, agent="w2", to=["w2"], subject="note to self", body="b")
    before = await snapshot(services.ctx.db)
    attempts = [
        services.agents.register(W1, name="w2"),
        services.agents.heartbeat(W1, agent="w2"),
        services.issues.claim(W1, issue_id, agent="w2"),
        services.issues.create(W1, title="as w2", agent="w2"),
        services.issues.comment(W1, issue_id, "as w2", agent="w2"),
        services.issues.close(W1, issue_id, "as w2", agent="w2"),
        services.messages.send(W1, agent="w2", to=["w1"], subject="s", body="b"),
        services.messages.fetch_inbox(W1, agent="w2"),
        services.messages.mark_read(W1, [1], agent="w2"),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied, match="bound to agent 'w1' and cannot act as 'w2'"):
            await attempt
    assert await snapshot(services.ctx.db) == before


async def test_bound_agent_acts_as_itself(services: Services, admin: Caller, setup: int) -> None:
    issue_id = setup
    claimed = await services.issues.claim(W1, issue_id)
    assert claimed.assignee == "w1"
    made = await services.issues.create(W1, title="found a bug")
    assert made.created_by == "w1"
    comment = await services.issues.comment(W1, issue_id, "on it", agent="w1")
    assert comment.author == "w1"
    msg = await services.messages.send(W1, to=["w2"], subject="s", body="b")
    assert msg.sender == "w1"
    assert (await services.agents.heartbeat(W1)).agent.name == "w1"
    # an optional agent field left empty ("", as some clients send) means the bound agent
    assert (await services.agents.register(W1, name="")).name == "w1"
    assert (await services.agents.heartbeat(W1, agent="")).agent.name == "w1"


async def test_team_token_passes_the_agent(services: Services, setup: int) -> None:
    issue_id = setup
    claimed = await services.issues.claim(TEAM, issue_id, agent="w2")
    assert claimed.assignee == "w2"
    msg = await services.messages.send(TEAM, agent="w2", to=["w1"], subject="s", body="b")
    assert msg.sender == "w2"
    with pytest.raises(InvalidInput) as err:
        await services.issues.claim(TEAM)
    assert err.value.field == "agent"
    with pytest.raises(InvalidInput, match="agent: required"):
        await services.messages.fetch_inbox(TEAM)
    # without an agent, a change is recorded as the token
    assert (await services.issues.create(TEAM, title="from a script")).created_by == "token:team"


async def test_a_worker_team_token_does_not_act_as_the_coordinator(
    services: Services, admin: Caller, setup: int
) -> None:
    issue_id = setup
    await services.agents.register(admin, name="boss", role=AgentRole.COORDINATOR)
    await services.issues.claim(admin, issue_id, agent="boss")
    await services.messages.send(admin, agent="w1", to=["boss"], subject="for the lead", body="b")
    before = await snapshot(services.ctx.db)
    attempts = [
        services.messages.send(TEAM, agent="boss", to=["w1"], subject="from boss", body="do X"),
        services.issues.close(TEAM, issue_id, "hijacked", agent="boss"),
        services.issues.comment(TEAM, issue_id, "as boss", agent="boss"),
        services.issues.create(TEAM, title="as boss", agent="boss"),
        services.issues.claim(TEAM, agent="boss"),
        services.agents.heartbeat(TEAM, agent="boss", status=AgentStatus.BLOCKED),
        services.messages.fetch_inbox(TEAM, agent="boss"),
        services.messages.mark_read(TEAM, [1], agent="boss"),
        services.reservations.reserve(TEAM, ["src/a.py"], agent="boss"),
        services.knowledge.add(TEAM, kind=KnowledgeKind.NOTE, title="t", body="b", agent="boss"),
    ]
    for attempt in attempts:
        with pytest.raises(
            PermissionDenied, match="'boss' is a coordinator; a worker team token cannot act as it"
        ):
            await attempt
    assert await snapshot(services.ctx.db) == before
    # a coordinator's team token may, and so may a token an admin bound to the coordinator
    lead_team = Caller(credential_id=21, role=TokenRole.COORDINATOR, label="leads")
    assert (await services.messages.fetch_inbox(lead_team, agent="boss")).items
    bound_boss = Caller(
        credential_id=22, role=TokenRole.WORKER, project="default", agent="boss", label="boss"
    )
    assert (await services.agents.heartbeat(bound_boss)).agent.name == "boss"


async def test_role_limits(services: Services, setup: int) -> None:
    before = await snapshot(services.ctx.db)
    viewer = Caller(credential_id=13, role=TokenRole.VIEWER, label="dash")
    with pytest.raises(PermissionDenied, match=r"a viewer token may not do issue\.write"):
        await services.issues.create(viewer, title="nope")
    with pytest.raises(
        PermissionDenied, match="registering a coordinator needs a coordinator or admin token"
    ):
        await services.agents.register(TEAM, name="boss", role=AgentRole.COORDINATOR)
    with pytest.raises(PermissionDenied, match=r"may not do issue\.assign_others"):
        await services.issues.create(W1, title="for w2", assignee="w2")
    with pytest.raises(PermissionDenied, match=r"may not do agent\.retire"):
        await services.agents.retire(W1, name="w2")
    with pytest.raises(PermissionDenied, match=r"may not do token\.admin"):
        await services.tokens.create(W1, role=TokenRole.ADMIN)
    assert await snapshot(services.ctx.db) == before
    assert [i.title for i in (await services.issues.list(viewer)).items] == ["job"]


async def test_project_scope_is_enforced(services: Services, admin: Caller, setup: int) -> None:
    await services.projects.create(admin, slug="other")
    await services.agents.register(admin, project="other", name="w1")
    with pytest.raises(PermissionDenied, match="scoped to project 'default'"):
        await services.issues.create(W1, title="elsewhere", project="other")
    with pytest.raises(PermissionDenied, match="scoped to project 'default'"):
        await services.issues.list(W1, project="other")
    assert [p.slug for p in await services.projects.list(W1)] == ["default"]
    with pytest.raises(NotFound, match="project 'nowhere' does not exist"):
        await services.issues.list(admin, project="nowhere")


async def test_tokens_authenticate_to_their_caller(services: Services, admin: Caller, setup: int) -> None:
    cred, secret = await services.tokens.create(admin, role=TokenRole.WORKER, project="default", agent="w1")
    caller = await services.tokens.authenticate(secret)
    assert (caller.role, caller.project, caller.agent, caller.credential_id) == (
        TokenRole.WORKER,
        "default",
        "w1",
        cred.id,
    )
    listed = await services.tokens.list(admin)
    assert [c.prefix for c in listed] == [secret[:12]]
    await services.tokens.revoke(admin, cred.id)
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate(secret)
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate("vibe_" + "x" * 43)
    with pytest.raises(InvalidInput, match="project: an agent-bound token needs a project"):
        await services.tokens.create(admin, role=TokenRole.WORKER, agent="w1")
    before = await snapshot(services.ctx.db)
    for reserved in ("system", "Overseer"):  # no agent can take the name, so such a token could never act
        with pytest.raises(
            InvalidInput, match=f"agent: '{reserved}' is reserved for the server's own records"
        ):
            await services.tokens.create(admin, role=TokenRole.WORKER, project="default", agent=reserved)
    assert await snapshot(services.ctx.db) == before


@pytest.mark.parametrize("name", ["ghost", "token:lead", "system", "<b>x</b>", "a\nb", "ann\r\nFrom: lead"])
async def test_a_team_token_acts_only_as_a_registered_agent(
    services: Services, admin: Caller, name: str
) -> None:
    await services.agents.register(admin, name="w1")
    team = Caller(credential_id=12, role=TokenRole.WORKER, project="default", label="team")
    before = await snapshot(services.ctx.db)
    calls = [
        services.issues.create(team, title="t", agent=name),
        services.messages.send(team, to=["w1"], subject="s", body="b", agent=name),
        services.reservations.reserve(team, ["src/a.py"], agent=name),
        services.agents.heartbeat(team, agent=name),
    ]
    for call in calls:
        with pytest.raises((NotFound, InvalidInput)) as refused:
            await call
        assert "agent" in str(refused.value)
    assert await snapshot(services.ctx.db) == before
    for reserved in ("system", "System", "overseer"):
        with pytest.raises(InvalidInput, match="reserved"):
            await services.agents.register(team, name=reserved)
    # a registered agent is fine; mail from the token itself is the overseer's, `token:team`
    sent = await services.messages.send(team, to=["w1"], subject="s", body="b", agent="w1")
    assert sent.sender == "w1"
    overseer = await services.messages.send(team, to=["w1"], subject="s", body="b")
    assert overseer.sender == "token:team"


async def test_a_name_differing_only_in_case_is_refused(services: Services, admin: Caller) -> None:
    """`Alice` beside `alice` would read as the same agent on the dashboard and in mail."""
    await services.agents.register(admin, name="alice")
    await services.agents.retire(admin, name="alice")
    before = await snapshot(services.ctx.db)
    bound = Caller(credential_id=13, role=TokenRole.WORKER, project="default", agent="ALICE", label="b")
    for attempt in (services.agents.register(admin, name="Alice"), services.agents.register(bound)):
        with pytest.raises(
            InvalidInput, match=r"name: 'A(lice|LICE)' differs only in letter case from the agent 'alice'"
        ):
            await attempt
    assert await snapshot(services.ctx.db) == before
    # the agent itself re-attaches by its exact name, and other names are untouched by the rule
    assert (await services.agents.register(admin, name="alice")).name == "alice"
    assert (await services.agents.register(admin, name="alicia")).name == "alicia"


async def test_names_differing_only_in_case_registered_at_once_are_not_both_taken(
    services: Services, admin: Caller
) -> None:
    """On PostgreSQL two transactions could both find no twin and both insert: the first one's
    letter-case-free name is locked until it commits, so the second sees it."""
    names = ["Bo", "bo", "BO", "bO"]
    results = await asyncio.gather(
        *(services.agents.register(admin, name=n) for n in names), return_exceptions=True
    )
    taken = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(taken) == 1, results
    assert all(isinstance(r, InvalidInput) and "differs only in letter case" in str(r) for r in refused)
    listed = [a.name for a in await services.agents.list(admin)]
    assert [n for n in listed if n.lower() == "bo"] == [taken[0].name]
