"""wait_for_messages: returns the moment mail is committed, empty at the timeout; one dispatcher
per process wakes only the recipients, however many agents wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import InvalidInput, NotFound, PermissionDenied
from vibe_ensemble.domain.models import Inbox
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.services.messages import MessageService
from vibe_ensemble.store import events as event_store


@pytest.fixture
async def live(runtime: Runtime) -> Runtime:
    await runtime.start_live()
    return runtime


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def agents(services: Services, admin: Caller, *names: str) -> None:
    for name in names:
        await services.agents.register(admin, name=name)


async def test_returns_unread_mail_at_once(live: Runtime, services: Services, admin: Caller) -> None:
    await agents(services, admin, "ann", "bob")
    first = await services.messages.send(admin, agent="ann", to=["bob"], subject="one", body="b")
    second = await services.messages.send(admin, agent="ann", to=["bob"], subject="two", body="b")
    started = time.monotonic()
    inbox = await services.live.wait_for_messages(admin, agent="bob", timeout_s=30)
    assert time.monotonic() - started < 1
    assert [i.message.id for i in inbox.items] == [first.id, second.id]
    newer = await services.live.wait_for_messages(admin, agent="bob", timeout_s=0.1, since_id=first.id)
    assert [i.message.id for i in newer.items] == [second.id]


async def test_returns_the_moment_mail_arrives(live: Runtime, services: Services, admin: Caller) -> None:
    await agents(services, admin, "ann", "bob")
    waiting = asyncio.create_task(services.live.wait_for_messages(admin, agent="bob", timeout_s=30))
    await until(lambda: services.live.mail.waiting == 1)
    sent = await services.messages.send(admin, agent="ann", to=["bob"], subject="hi", body="b")
    sent_at = time.monotonic()
    inbox = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - sent_at < 1
    assert [i.message.id for i in inbox.items] == [sent.id]
    assert inbox.items[0].read_at is None  # waiting never marks read unless asked
    assert services.live.mail.waiting == 0


async def test_empty_at_the_timeout(live: Runtime, services: Services, admin: Caller) -> None:
    await agents(services, admin, "bob")
    started = time.monotonic()
    inbox = await services.live.wait_for_messages(admin, agent="bob", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    assert inbox == Inbox(items=[], unread=0, next_since_id=None)


async def test_mark_read(live: Runtime, services: Services, admin: Caller) -> None:
    await agents(services, admin, "ann", "bob")
    sent = await services.messages.send(admin, agent="ann", to=["bob"], subject="hi", body="b")
    inbox = await services.live.wait_for_messages(admin, agent="bob", timeout_s=1, mark_read=True)
    assert [i.message.id for i in inbox.items] == [sent.id]
    assert inbox.items[0].read_at is not None
    assert inbox.unread == 0
    again = await services.live.wait_for_messages(admin, agent="bob", timeout_s=0)
    assert again.items == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"timeout_s": 60.5}, "timeout_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"since_id": -1}, "since_id"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_bad_input_is_refused_by_name(
    live: Runtime, services: Services, admin: Caller, arguments: dict[str, Any], field: str
) -> None:
    await agents(services, admin, "bob")
    with pytest.raises(InvalidInput) as refused:
        await services.live.wait_for_messages(admin, agent="bob", **arguments)
    assert refused.value.details["field"] == field
    assert services.live.mail.waiting == 0


async def test_a_bound_token_waits_only_for_its_own_mail(
    live: Runtime, services: Services, admin: Caller
) -> None:
    await agents(services, admin, "ann", "bob")
    ann = Caller(credential_id=None, role=TokenRole.WORKER, project="default", agent="ann")
    with pytest.raises(PermissionDenied):
        await services.live.wait_for_messages(ann, agent="bob", timeout_s=0)
    viewer = Caller(credential_id=None, role=TokenRole.VIEWER)
    with pytest.raises(PermissionDenied):
        await services.live.wait_for_messages(viewer, agent="bob", timeout_s=0)


async def test_many_waiters_cost_one_read_per_wake_up_and_only_recipients_wake(
    live: Runtime, services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"w{i}" for i in range(40)]
    await agents(services, admin, "boss", "busy", *names)
    waiters = {
        name: asyncio.create_task(services.live.wait_for_messages(admin, agent=name, timeout_s=30))
        for name in names
    }
    await until(lambda: services.live.mail.waiting == len(names))

    reads = {"events": 0, "inbox": 0}
    real_after, real_fetch = event_store.after, MessageService.fetch_inbox

    async def counting_after(*args: Any, **kwargs: Any) -> Any:
        reads["events"] += 1
        return await real_after(*args, **kwargs)

    async def counting_fetch(self: MessageService, *args: Any, **kwargs: Any) -> Inbox:
        reads["inbox"] += 1
        return await real_fetch(self, *args, **kwargs)

    monkeypatch.setattr(event_store, "after", counting_after)
    monkeypatch.setattr(MessageService, "fetch_inbox", counting_fetch)

    # Ten commits of mail for an agent nobody waits for: the dispatcher reads at most once per
    # wake-up; no waiter wakes or queries anything.
    for i in range(10):
        await services.messages.send(admin, agent="boss", to=["busy"], subject=f"s{i}", body="b")
    newest = await services.events.latest_id()
    await until(lambda: services.live.mail.position >= newest)
    assert 1 <= reads["events"] <= 10
    assert reads["inbox"] == 0
    assert not any(t.done() for t in waiters.values())

    # Mail for one waiter wakes that one alone.
    sent = await services.messages.send(admin, agent="boss", to=["w7"], subject="you", body="b")
    inbox = await asyncio.wait_for(waiters.pop("w7"), 5)
    assert [i.message.id for i in inbox.items] == [sent.id]
    assert reads["inbox"] == 1
    assert not any(t.done() for t in waiters.values())

    # A broadcast wakes everyone it reached.
    note = await services.messages.send(admin, agent="boss", broadcast=True, subject="all", body="b")
    results = await asyncio.wait_for(asyncio.gather(*waiters.values()), 30)  # a bound on a hang
    assert all([i.message.id for i in r.items] == [note.id] for r in results)


async def test_waiters_are_released_at_shutdown(live: Runtime, services: Services, admin: Caller) -> None:
    await agents(services, admin, "bob")
    waiting = asyncio.create_task(services.live.wait_for_messages(admin, agent="bob", timeout_s=60))
    await until(lambda: services.live.mail.waiting == 1)
    live.begin_shutdown()
    inbox = await asyncio.wait_for(waiting, 2)
    assert inbox.items == []


async def test_ids_beyond_64_bits_are_refused_by_name(
    live: Runtime, services: Services, admin: Caller
) -> None:
    await agents(services, admin, "bob")
    with pytest.raises(InvalidInput) as refused:
        await services.live.wait_for_messages(admin, agent="bob", timeout_s=0, since_id=2**64)
    assert refused.value.details["field"] == "since_id"
    with pytest.raises(InvalidInput) as refused:
        await services.live.feed(admin, after=2**63)
    assert refused.value.details["field"] == "after"


async def test_a_wait_ends_when_its_agent_is_retired(
    live: Runtime, services: Services, admin: Caller
) -> None:
    """Retired while it waits, an agent hears so at once, not when its timeout runs out."""
    await agents(services, admin, "bob")
    bob = Caller(credential_id=None, role=TokenRole.WORKER, agent="bob", label="bob")
    waiting = asyncio.create_task(services.live.wait_for_messages(bob, timeout_s=60))
    await until(lambda: services.live.mail.waiting == 1)
    await services.agents.retire(admin, name="bob")
    with pytest.raises(NotFound, match="retired"):
        await asyncio.wait_for(waiting, 10)
    assert services.live.mail.waiting == 0
