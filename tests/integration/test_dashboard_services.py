"""What the dashboard asks of the services: sessions re-checked against their credential, overseer
messages audited with the message, the newest events — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied, Unauthenticated
from vibe_ensemble.services import Services
from vibe_ensemble.store import sessions as session_store


async def test_a_session_stands_for_its_credential_until_revoked_or_expired(
    services: Services, admin: Caller
) -> None:
    cred, _ = await services.tokens.create(admin, role=TokenRole.VIEWER, project="default", label="lena")
    expiring, _ = await services.tokens.create(
        admin, role=TokenRole.WORKER, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    caller = await services.tokens.authenticate_session(cred.id, "", remote="192.0.2.7")
    assert (caller.credential_id, caller.role, caller.project) == (cred.id, TokenRole.VIEWER, "default")
    assert (caller.display, caller.remote) == ("token:lena", "192.0.2.7")

    await services.tokens.revoke(admin, cred.id)
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate_session(cred.id, "", remote="192.0.2.7")
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate_session(999_999, "")
    await services.tokens.authenticate_session(expiring.id, "")
    services.ctx.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate_session(expiring.id, "")

    failures = (await services.audit.page(admin, action="auth.failed")).items
    assert [(f.details["reason"], f.details["credential_id"]) for f in failures] == [
        ("session of an expired token", expiring.id),
        ("session of an unknown token", 999_999),
        ("session of a revoked token", cred.id),
    ]


async def test_a_logout_ends_that_session_only_and_expired_ends_are_forgotten(
    services: Services, admin: Caller
) -> None:
    cred, _ = await services.tokens.create(admin, role=TokenRole.VIEWER, project="default", label="lena")
    one, other = "1" * 64, "2" * 64  # two browsers' sessions of one token
    caller = await services.tokens.authenticate_session(cred.id, one, remote="192.0.2.7")
    soon = datetime.now(UTC) + timedelta(hours=1)
    await services.tokens.end_session(caller, one, soon)
    await services.tokens.end_session(caller, one, soon)  # twice (two tabs): nothing more changes
    with pytest.raises(Unauthenticated, match="ended by a logout"):
        await services.tokens.authenticate_session(cred.id, one, remote="192.0.2.7")
    await services.tokens.authenticate_session(cred.id, other)
    ends = (await services.audit.page(admin, action="session.ended")).items
    assert [(e.actor, e.details["credential_id"]) for e in ends] == [("token:lena", cred.id)] * 2
    failures = (await services.audit.page(admin, action="auth.failed")).items
    assert [f.details["reason"] for f in failures] == ["session ended by a logout"]

    # Once the session would have expired anyway, the next logout forgets its end.
    services.ctx.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    await services.tokens.end_session(caller, other, soon + timedelta(hours=2))
    async with services.ctx.db.read() as conn:
        kept = await session_store.all_(conn)
    assert [row["session_hash"] for row in kept] == [other]


async def test_an_overseer_message_is_audited_with_it(services: Services, admin: Caller) -> None:
    for name, role in (
        ("ada", AgentRole.COORDINATOR),
        ("brook", AgentRole.WORKER),
        ("cyd", AgentRole.WORKER),
    ):
        await services.agents.register(admin, name=name, role=role)
    cred, _ = await services.tokens.create(admin, role=TokenRole.COORDINATOR, label="lead")
    lead = await services.tokens.authenticate_session(cred.id, "", remote="192.0.2.8")
    message = await services.messages.send(
        lead, subject="Freeze merges", body="Release in an hour.", to_role=AgentRole.WORKER, overseer=True
    )
    assert message.sender == "token:lead" and message.recipients == ["brook", "cyd"]
    await services.messages.send(lead, subject="Not audited", body="b", to=["ada"])

    entries = (await services.audit.page(admin, action="message.overseer")).items
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.actor, entry.remote, entry.outcome) == ("token:lead", "192.0.2.8", "ok")
    assert entry.details["message_id"] == message.id
    assert entry.details["recipients"] == ["brook", "cyd"]
    assert (entry.details["to_role"], entry.details["subject"]) == ("worker", "Freeze merges")

    with pytest.raises(InvalidInput):
        await services.messages.send(lead, subject="", body="b", broadcast=True, overseer=True)
    viewer = await services.tokens.authenticate_session(
        (await services.tokens.create(admin, role=TokenRole.VIEWER))[0].id, ""
    )
    with pytest.raises(PermissionDenied):
        await services.messages.send(viewer, subject="s", body="b", broadcast=True, overseer=True)
    assert len((await services.audit.page(admin, action="message.overseer")).items) == 1


async def test_recent_events_are_the_newest_first_within_the_callers_scope(
    services: Services, admin: Caller
) -> None:
    await services.projects.create(admin, slug="other")
    for n in range(5):
        await services.issues.create(admin, title=f"issue {n}")
    await services.issues.create(admin, title="elsewhere", project="other")
    recent = await services.events.recent(admin, project="default", types=["issue.created"], limit=3)
    assert [e.payload["title"] for e in recent] == ["issue 4", "issue 3", "issue 2"]
    scoped, _ = await services.tokens.create(admin, role=TokenRole.VIEWER, project="other")
    outsider = await services.tokens.authenticate_session(scoped.id, "")
    assert {e.project for e in await services.events.recent(outsider)} == {"other"}
    with pytest.raises(PermissionDenied):
        await services.events.recent(outsider, project="default")
    with pytest.raises(InvalidInput):
        await services.events.recent(admin, limit=0)
