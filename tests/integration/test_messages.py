"""Mail: direct, to a role, broadcast; threads; read and acknowledged per recipient; paging."""

from __future__ import annotations

import pytest

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.errors import InvalidInput, NotFound
from vibe_ensemble.services import Services

from .snapshot import snapshot


@pytest.fixture
async def team(services: Services, admin: Caller) -> Services:
    await services.agents.register(admin, name="lead", role=AgentRole.COORDINATOR)
    for name in ("w1", "w2", "w3"):
        await services.agents.register(admin, name=name)
    await services.agents.register(admin, name="watcher", role=AgentRole.OBSERVER)
    return services


async def test_mail_nobody_would_receive_is_refused(team: Services, admin: Caller) -> None:
    await team.projects.create(admin, slug="other", name="Other")
    await team.agents.register(admin, name="solo", project="other")
    before = await snapshot(team.ctx.db)
    nobody = r"to_role: no active coordinator in this project \(other than the sender\) would receive it"
    with pytest.raises(InvalidInput, match=nobody):
        await team.messages.send(admin, agent="lead", to_role=AgentRole.COORDINATOR, subject="s", body="b")
    with pytest.raises(InvalidInput, match="broadcast: no other active agent in this project"):
        await team.messages.send(admin, agent="solo", broadcast=True, subject="s", body="b", project="other")
    assert await snapshot(team.ctx.db) == before
    # a role someone holds reaches them
    sent = await team.messages.send(admin, agent="w1", to_role=AgentRole.COORDINATOR, subject="s", body="b")
    assert sent.recipients == ["lead"]


async def inbox_ids(services: Services, admin: Caller, agent: str) -> list[int]:
    return [i.message.id for i in (await services.messages.fetch_inbox(admin, agent=agent)).items]


async def test_direct_role_and_broadcast_delivery(team: Services, admin: Caller) -> None:
    direct = await team.messages.send(admin, agent="lead", to=["w1", "w2"], subject="hi", body="pair up")
    assert direct.sender == "lead"
    assert direct.recipients == ["w1", "w2"]
    to_workers = await team.messages.send(
        admin, agent="w1", to_role=AgentRole.WORKER, subject="workers", body="sync"
    )
    assert to_workers.recipients == ["w2", "w3"]  # the sender is not among the recipients
    assert to_workers.to_role == AgentRole.WORKER
    everyone = await team.messages.send(admin, agent="lead", broadcast=True, subject="all", body="standup")
    assert everyone.broadcast
    assert everyone.recipients == ["w1", "w2", "w3", "watcher"]

    assert await inbox_ids(team, admin, "lead") == []
    assert await inbox_ids(team, admin, "w1") == [direct.id, everyone.id]
    assert await inbox_ids(team, admin, "w2") == [direct.id, to_workers.id, everyone.id]
    assert await inbox_ids(team, admin, "w3") == [to_workers.id, everyone.id]
    assert await inbox_ids(team, admin, "watcher") == [everyone.id]

    sent = await team.events.page(admin, types=["message.sent"])
    assert [e.payload["recipients"] for e in sent.items] == [
        ["w1", "w2"],
        ["w2", "w3"],
        ["w1", "w2", "w3", "watcher"],
    ]


async def test_recipients_combine_each_once(team: Services, admin: Caller) -> None:
    """`to` with `to_role` reaches both (each agent once); `broadcast` reaches everyone but the sender."""
    both = await team.messages.send(
        admin, agent="w1", to=["watcher", "w2"], to_role=AgentRole.WORKER, subject="s", body="b"
    )
    assert both.recipients == ["w2", "w3", "watcher"]
    everyone = await team.messages.send(admin, agent="w1", to=["w2"], broadcast=True, subject="s", body="b")
    assert everyone.recipients == ["lead", "w2", "w3", "watcher"]


async def test_threads_importance_and_ack_required(team: Services, admin: Caller) -> None:
    question = await team.messages.send(
        admin,
        agent="lead",
        to=["w1"],
        subject="API shape?",
        body="**Which** version?",
        importance=Importance.URGENT,
        ack_required=True,
    )
    assert question.thread_id.startswith("t-")
    reply = await team.messages.send(
        admin, agent="w1", to=["lead"], subject="re: API shape?", body="v2", thread_id=question.thread_id
    )
    assert reply.thread_id == question.thread_id
    item = (await team.messages.fetch_inbox(admin, agent="w1")).items[0]
    assert item.message.importance == Importance.URGENT
    assert item.message.ack_required
    assert item.message.body == "**Which** version?"
    beat = await team.agents.heartbeat(admin, agent="w1")
    assert beat.unread_messages == 1
    assert [i.message.id for i in beat.urgent_unread] == [question.id]


async def test_a_heartbeat_counts_the_unread_and_lists_the_urgent_oldest_first(
    team: Services, admin: Caller
) -> None:
    """The unread count and the urgent unread mail come from one statement: with no mail, with
    unread mail none of it urgent, and with more urgent mail than the heartbeat lists (10)."""
    beat = await team.agents.heartbeat(admin, agent="w1")
    assert (beat.unread_messages, beat.urgent_unread) == (0, [])
    for i in range(3):
        await team.messages.send(admin, agent="lead", to=["w1"], subject=f"fyi {i}", body="b")
    beat = await team.agents.heartbeat(admin, agent="w1")
    assert (beat.unread_messages, beat.urgent_unread) == (3, [])
    urgent = []
    for i in range(12):
        importance = Importance.URGENT if i % 2 else Importance.HIGH
        sent = await team.messages.send(
            admin, agent="lead", to=["w1"], subject=f"now {i}", body="b", importance=importance
        )
        urgent.append(sent.id)
    low = Importance.LOW
    await team.messages.send(admin, agent="lead", to=["w1"], subject="low", body="b", importance=low)
    beat = await team.agents.heartbeat(admin, agent="w1")
    assert beat.unread_messages == 16
    assert [i.message.id for i in beat.urgent_unread] == urgent[:10]  # the oldest ten, in order
    assert all(i.read_at is None and i.message.recipients == ["w1"] for i in beat.urgent_unread)
    await team.messages.mark_read(admin, urgent[:2], agent="w1")
    beat = await team.agents.heartbeat(admin, agent="w1")
    assert beat.unread_messages == 14 and [i.message.id for i in beat.urgent_unread] == urgent[2:12]


async def test_fetching_never_marks_read_unless_asked(team: Services, admin: Caller) -> None:
    sent = await team.messages.send(admin, agent="lead", to=["w1"], subject="s", body="b")
    for _ in range(2):
        inbox = await team.messages.fetch_inbox(admin, agent="w1")
        assert inbox.unread == 1
        assert inbox.items[0].read_at is None
    assert len((await team.messages.fetch_inbox(admin, agent="w1", unread_only=True)).items) == 1

    marked = await team.messages.fetch_inbox(admin, agent="w1", mark_read=True)
    assert marked.items[0].read_at is not None
    assert marked.unread == 0
    assert (await team.messages.fetch_inbox(admin, agent="w1", unread_only=True)).items == []
    read_events = await team.events.page(admin, types=["message.read"])
    assert [e.payload["ids"] for e in read_events.items] == [[sent.id]]


async def test_read_and_acknowledged_are_separate_per_recipient(team: Services, admin: Caller) -> None:
    msg = await team.messages.send(
        admin, agent="lead", to=["w1", "w2", "w3"], subject="deploy", body="ack please", ack_required=True
    )
    assert await team.messages.mark_read(admin, [msg.id], agent="w1") == [msg.id]
    assert await team.messages.acknowledge(admin, [msg.id], agent="w2") == [msg.id]

    views = {}
    for name in ("w1", "w2", "w3"):
        item = (await team.messages.fetch_inbox(admin, agent=name)).items[0]
        views[name] = (item.read_at is not None, item.acked_at is not None)
    assert views == {"w1": (True, False), "w2": (True, True), "w3": (False, False)}

    # acknowledging later keeps the first read time
    first_read = (await team.messages.fetch_inbox(admin, agent="w1")).items[0].read_at
    await team.messages.acknowledge(admin, [msg.id], agent="w1")
    again = (await team.messages.fetch_inbox(admin, agent="w1")).items[0]
    assert again.read_at == first_read
    assert again.acked_at is not None


async def test_paging_with_since_id(team: Services, admin: Caller) -> None:
    ids = [
        (await team.messages.send(admin, agent="lead", to=["w1"], subject=f"m{i}", body="b")).id
        for i in range(5)
    ]
    await team.messages.send(admin, agent="lead", to=["w2"], subject="not for w1", body="b")
    pages: list[list[int]] = []
    since = 0
    while True:
        inbox = await team.messages.fetch_inbox(admin, agent="w1", since_id=since, limit=2)
        pages.append([i.message.id for i in inbox.items])
        if inbox.next_since_id is None:
            break
        assert inbox.next_since_id == inbox.items[-1].message.id
        since = inbox.next_since_id
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert (await team.messages.fetch_inbox(admin, agent="w1", since_id=ids[-1])).items == []


async def test_marking_mail_not_in_your_inbox_is_not_found_and_changes_nothing(
    team: Services, admin: Caller
) -> None:
    mine = await team.messages.send(admin, agent="lead", to=["w1"], subject="for w1", body="b")
    theirs = await team.messages.send(admin, agent="lead", to=["w2"], subject="for w2", body="b")
    before = await snapshot(team.ctx.db)
    with pytest.raises(NotFound) as err:
        await team.messages.mark_read(admin, [mine.id, theirs.id], agent="w1")
    assert err.value.message == f"not in w1's inbox: [{theirs.id}]"
    assert err.value.details == {"ids": [theirs.id]}
    with pytest.raises(NotFound, match=r"not in w1's inbox: \[999\]"):
        await team.messages.acknowledge(admin, [999], agent="w1")
    with pytest.raises(InvalidInput, match="ids: give at least one message id"):
        await team.messages.mark_read(admin, [], agent="w1")
    assert await snapshot(team.ctx.db) == before
    assert (await team.messages.fetch_inbox(admin, agent="w1")).unread == 1


async def test_bad_recipients_are_refused(team: Services, admin: Caller) -> None:
    await team.agents.retire(admin, name="w3")
    before = await snapshot(team.ctx.db)
    with pytest.raises(InvalidInput, match="to: name at least one recipient"):
        await team.messages.send(admin, agent="lead", subject="s", body="b")
    with pytest.raises(InvalidInput, match="to: no active agent named 'ghost'"):
        await team.messages.send(admin, agent="lead", to=["w1", "ghost"], subject="s", body="b")
    with pytest.raises(InvalidInput, match="to: no active agent named 'w3'"):
        await team.messages.send(admin, agent="lead", to=["w3"], subject="s", body="b")
    with pytest.raises(InvalidInput, match="subject: must not be empty"):
        await team.messages.send(admin, agent="lead", to=["w1"], subject="", body="b")
    assert await snapshot(team.ctx.db) == before
    # retired agents are not reached by a broadcast either
    everyone = await team.messages.send(admin, agent="lead", broadcast=True, subject="s", body="b")
    assert everyone.recipients == ["w1", "w2", "watcher"]


async def test_the_inbox_of_an_unknown_or_retired_agent_is_not_found_with_mail_or_without(
    team: Services, admin: Caller
) -> None:
    """The inbox page finds its agent in the same statement: an agent that is not registered, or
    is retired, has no inbox, whether mail is waiting for it or not."""
    with pytest.raises(NotFound, match="'ghost' is not registered"):
        await team.messages.fetch_inbox(admin, agent="ghost")
    await team.messages.send(admin, agent="lead", to=["w1", "w2"], subject="s", body="b")
    assert (await team.messages.fetch_inbox(admin, agent="w2", unread_only=True)).unread == 1
    await team.agents.retire(admin, name="w2")
    for unread_only in (False, True):
        with pytest.raises(NotFound, match="'w2' is retired"):
            await team.messages.fetch_inbox(admin, agent="w2", unread_only=unread_only)
        with pytest.raises(NotFound, match="'w2' is retired"):
            await team.messages.fetch_inbox(admin, agent="w2", mark_read=True)
    # another agent's mail is untouched, and an agent with no mail gets an empty page
    inbox = await team.messages.fetch_inbox(admin, agent="w1", mark_read=True)
    assert [i.message.subject for i in inbox.items] == ["s"] and inbox.unread == 0
    empty = await team.messages.fetch_inbox(admin, agent="w3")
    assert empty.items == [] and empty.unread == 0 and empty.next_since_id is None
