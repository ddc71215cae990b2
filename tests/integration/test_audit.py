"""The audit log: authentication failures, denials, token changes and admin actions; never a token."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pytest

from vibe_ensemble.auth.ratelimit import RateLimiter
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import PermissionDenied, RateLimited, Unauthenticated
from vibe_ensemble.services import Services
from vibe_ensemble.services.tokens import AUTH_FAILURE


async def _everything(services: Services, admin: Caller) -> str:
    """Every audit entry as one JSON text, to search for secrets."""
    page = await services.audit.page(admin, limit=1000)
    return json.dumps([asdict(e) for e in page.items], default=str)


async def test_authentication_failures_are_recorded_without_the_token(
    services: Services, admin: Caller
) -> None:
    _, revoked = await services.tokens.create(admin, role=TokenRole.WORKER, label="soon revoked")
    cred, expiring = await services.tokens.create(
        admin, role=TokenRole.WORKER, expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await services.tokens.revoke(admin, (await services.tokens.list(admin))[0].id)
    unknown = "vibe_" + "Q" * 43
    for token in (unknown, revoked, "not-a-token", ""):
        with pytest.raises(Unauthenticated):
            await services.tokens.authenticate(token, remote="203.0.113.9")
    services.ctx.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(Unauthenticated):
        await services.tokens.authenticate(expiring, remote="203.0.113.9")

    page = await services.audit.page(admin, action="auth.*")
    reasons = [e.details["reason"] for e in page.items]
    assert reasons == ["expired token", "missing token", "malformed token", "revoked token", "unknown token"]
    assert {e.remote for e in page.items} == {"203.0.113.9"}
    assert {e.actor for e in page.items} == {"anonymous"}
    assert {e.outcome for e in page.items} == {"failed"}
    assert page.items[0].details["credential_id"] == cred.id
    assert page.items[-1].details["prefix"] == unknown[:12]
    everything = await _everything(services, admin)
    for secret in (unknown, revoked, expiring):
        assert secret not in everything
        assert secret[12:20] not in everything


async def test_token_changes_and_admin_actions_are_recorded(services: Services, admin: Caller) -> None:
    boss = replace(admin, credential_id=1, label="ops", remote="198.51.100.4")
    cred, secret = await services.tokens.create(
        boss, role=TokenRole.COORDINATOR, project="default", label="planner"
    )
    await services.tokens.revoke(boss, cred.id)
    await services.projects.create(boss, slug="web")
    await services.agents.register(admin, name="w1")
    await services.agents.retire(boss, name="w1", reason="done")

    items = (await services.audit.page(admin)).items
    assert [e.action for e in items] == ["agent.retired", "project.created", "token.revoked", "token.created"]
    assert {e.actor for e in items} == {"token:ops"}
    assert {e.remote for e in items} == {"198.51.100.4"}
    created = items[-1].details
    assert created["token_id"] == cred.id
    assert created["token_role"] == "coordinator"
    assert created["project"] == "default"
    assert created["credential_id"] == 1
    assert items[0].details["agent"] == "w1"
    assert secret not in await _everything(services, admin)


async def test_denials_are_recorded_with_who_and_what(services: Services, admin: Caller) -> None:
    viewer = Caller(credential_id=7, role=TokenRole.VIEWER, label="watcher", remote="192.0.2.1")
    with pytest.raises(PermissionDenied) as refused:
        await services.issues.create(viewer, title="nope")
    await services.audit.denied(viewer, refused.value)

    (entry,) = (await services.audit.page(admin, outcome="denied")).items
    assert (entry.actor, entry.action, entry.remote) == ("token:watcher", "access.denied", "192.0.2.1")
    assert entry.details["operation"] == "issue.write"
    assert entry.details["role"] == "viewer"
    assert entry.details["credential_id"] == 7


async def test_tokens_in_details_are_redacted(services: Services, admin: Caller) -> None:
    _, secret = await services.tokens.create(admin, role=TokenRole.WORKER)
    await services.audit.record(admin, "test.note", note=f"user pasted {secret} here", nested={"k": [secret]})
    entry = (await services.audit.page(admin, action="test.note")).items[0]
    assert entry.details["note"] == f"user pasted {secret[:12]}… here"
    assert entry.details["nested"] == {"k": [secret[:12] + "…"]}


async def test_a_refused_call_with_huge_arguments_writes_a_bounded_row(
    services: Services, admin: Caller
) -> None:
    worker = Caller(credential_id=9, role=TokenRole.WORKER, agent="ann", label="ann")
    huge = "b" * 900_000
    with pytest.raises(PermissionDenied) as refused:
        await services.reservations.reserve(worker, ["src/a.py"], agent=huge)
    await services.audit.denied(worker, refused.value)
    await services.audit.record(
        admin, "test.note", items=[huge] * 1000, deep={"a": {"b": {"c": {"d": {"e": huge}}}}}
    )

    denial, note = (await services.audit.page(admin, outcome="denied")).items + (
        await services.audit.page(admin, action="test.note")
    ).items
    assert denial.details["agent"].startswith("bbbb")
    assert denial.details["agent"].endswith("… [truncated from 900000 characters]")
    assert "[truncated from" in denial.details["message"]
    assert (
        len(note.details["items"]) == 51 and note.details["items"][-1] == "[950 more items of 1000 omitted]"
    )
    assert "omitted" in json.dumps(note.details["deep"])
    for entry in (denial, note):
        assert len(json.dumps(asdict(entry), default=str)) < 40_000


async def test_only_unscoped_admins_read_the_log(services: Services, admin: Caller) -> None:
    for caller in (
        Caller(credential_id=2, role=TokenRole.COORDINATOR),
        Caller(credential_id=3, role=TokenRole.VIEWER),
        Caller(credential_id=4, role=TokenRole.ADMIN, project="default"),
    ):
        with pytest.raises(PermissionDenied):
            await services.audit.page(caller)


async def test_pages_go_back_in_time(services: Services, admin: Caller) -> None:
    for i in range(5):
        await services.audit.record(admin, "test.step", i=i)
    first = await services.audit.page(admin, action="test.step", limit=2)
    assert [e.details["i"] for e in first.items] == [4, 3]
    assert first.next_before is not None
    second = await services.audit.page(admin, action="test.step", limit=2, before=first.next_before)
    third = await services.audit.page(admin, action="test.step", limit=2, before=second.next_before)
    assert [e.details["i"] for e in second.items + third.items] == [2, 1, 0]
    assert third.next_before is None


async def test_failed_logins_are_limited_per_address_and_stop_being_written(
    services: Services, admin: Caller
) -> None:
    services.ctx.limiter = RateLimiter({AUTH_FAILURE: 3}, burst=3)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await services.tokens.authenticate("vibe_" + "x" * 43, remote="10.9.9.9")
    with pytest.raises(RateLimited) as limited:
        await services.tokens.authenticate("vibe_" + "x" * 43, remote="10.9.9.9")
    assert limited.value.retry_after > 0
    with pytest.raises(Unauthenticated):  # another address has its own bucket
        await services.tokens.authenticate("vibe_" + "x" * 43, remote="10.9.9.10")
    assert len((await services.audit.page(admin, action="auth.failed")).items) == 4


async def test_a_short_wait_is_never_said_as_zero(services: Services, admin: Caller) -> None:
    now = [100.0]  # a clock that moves only when the test says
    services.ctx.limiter = RateLimiter({"worker": 60}, burst=1, clock=lambda: now[0])
    _, worker = await services.tokens.create(admin, role=TokenRole.WORKER)
    await services.tokens.authenticate(worker)
    now[0] += 0.996  # 4 ms before the next request is allowed
    with pytest.raises(RateLimited, match=r"retry in 0\.1s$") as limited:
        await services.tokens.authenticate(worker)
    assert limited.value.retry_after == pytest.approx(0.004)


async def test_each_credential_has_its_own_rate(services: Services, admin: Caller) -> None:
    services.ctx.limiter = RateLimiter({"worker": 60, "admin": 0}, burst=2)
    _, worker = await services.tokens.create(admin, role=TokenRole.WORKER)
    _, other = await services.tokens.create(admin, role=TokenRole.WORKER)
    _, boss = await services.tokens.create(admin, role=TokenRole.ADMIN)
    for _ in range(2):
        await services.tokens.authenticate(worker)
    with pytest.raises(RateLimited, match="rate limit of the worker role"):
        await services.tokens.authenticate(worker)
    await services.tokens.authenticate(other)
    for _ in range(10):
        await services.tokens.authenticate(boss)  # 0: unlimited
    # checking identity without spending the budget
    assert (await services.tokens.authenticate(worker, throttle=False)).role is TokenRole.WORKER
