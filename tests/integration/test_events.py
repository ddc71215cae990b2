"""Every change and its event commit together; the log pages in id order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog.testing

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Event
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.tables import events, issues, message_recipients, messages

from .snapshot import count, count_in, snapshot


class Boom(Exception):
    pass


async def test_a_failure_mid_change_leaves_neither_row_nor_event(
    services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.agents.register(admin, name="w1")
    await services.agents.register(admin, name="w2")
    issue = await services.issues.create(admin, title="kept")
    before = await snapshot(services.ctx.db)
    latest = await services.events.latest_id()

    real = event_store.append

    async def append(conn: Any, now: Any, new: Any) -> None:
        written = await count_in(conn, events)
        await real(conn, now, new)
        assert await count_in(conn, events) == written + len(new), "the events were written, then it failed"
        raise Boom("the disk is full")

    monkeypatch.setattr(event_store, "append", append)
    with pytest.raises(Boom):
        await services.issues.create(admin, title="lost")
    with pytest.raises(Boom):
        await services.issues.claim(admin, issue.id, agent="w1")
    with pytest.raises(Boom):  # (a person's message: audited too, so a transaction on both databases;
        # an agent's is one statement on PostgreSQL, whole or nothing: test_postgres_send_is_one_statement)
        await services.messages.send(admin, agent="w1", to=["w2"], subject="lost", body="b", overseer=True)
    with pytest.raises(Boom):
        await services.issues.close(admin, issue.id, "lost")

    assert await snapshot(services.ctx.db) == before
    assert await services.events.latest_id() == latest
    assert services.ctx.hub.latest <= latest  # nobody was told about events that never committed
    monkeypatch.undo()
    # the same changes go through once the failure is gone, each with its event
    made = await services.issues.create(admin, title="kept too")
    page = await services.events.page(admin, after=latest)
    assert [(e.type, e.payload["id"]) for e in page.items] == [
        ("issue.created", made.id),
        ("issue.ready", made.id),
    ]
    if services.ctx.db.is_sqlite:  # PostgreSQL's ids are given at COMMIT: its bridge publishes them
        assert services.ctx.hub.latest == page.last_id


async def test_rows_and_events_agree(services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="w1")
    await services.agents.register(admin, name="w2")
    for i in range(3):
        await services.issues.create(admin, title=f"i{i}")
    message = await services.messages.send(admin, agent="w1", to=["w2"], subject="s", body="b")
    db = services.ctx.db
    created = await services.events.page(admin, types=["issue.created"])
    assert len(created.items) == await count(db, issues) == 3
    sent = await services.events.page(admin, types=["message.sent"])
    assert len(sent.items) == await count(db, messages) == 1
    assert (sent.items[0].actor, sent.items[0].time) == ("w1", message.created_at)
    assert sent.items[0].payload == {
        "id": message.id,
        "sender": "w1",
        "recipients": ["w2"],
        "subject": "s",
        "importance": "normal",
        "thread_id": message.thread_id,
    }
    assert await count(db, message_recipients) == 1
    types = [e.type for e in (await services.events.page(admin)).items]
    assert types == [
        "project.created",
        "agent.registered",
        "agent.registered",
        *["issue.created", "issue.ready"] * 3,
        "message.sent",
    ]
    assert await count(db, events) == len(types)


async def test_a_one_statement_write_refuses_events_and_audits_through_its_transaction(
    services: Services, admin: Caller
) -> None:
    """A write that is one statement writes its events itself: an event or audit record given to its
    transaction (a second statement, outside it on PostgreSQL) is refused where it is given."""
    before = await snapshot(services.ctx.db)
    async with services.messages.write(one_statement=True) as tx:
        with pytest.raises(RuntimeError, match="writes its events itself"):
            tx.emit(EventType.MESSAGE_READ, "w1", None, agent="w1", ids=[1])
        with pytest.raises(RuntimeError, match="no audit record"):
            tx.audit(admin, "message.overseer")
    assert await snapshot(services.ctx.db) == before


async def test_events_page_after_an_id(services: Services, admin: Caller) -> None:
    for i in range(7):
        await services.issues.create(admin, title=f"i{i}")
    everything = (await services.events.page(admin, limit=1000)).items
    ids = [e.id for e in everything]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids) == 15  # project.created + 7 x (issue.created, issue.ready)

    seen: list[int] = []
    after = 0
    while True:
        page = await services.events.page(admin, after=after, limit=4)
        if not page.items:
            assert page.last_id == after
            break
        assert all(e.id > after for e in page.items)
        assert page.last_id == page.items[-1].id
        seen += [e.id for e in page.items]
        after = page.last_id
    assert seen == ids

    only_created = await services.events.page(admin, types=["issue.created"])
    assert len(only_created.items) == 7
    family = await services.events.page(admin, types=["issue.*"])
    assert len(family.items) == 14
    assert all(e.project == "default" for e in family.items)


async def test_events_are_filtered_by_project(services: Services, admin: Caller) -> None:
    await services.projects.create(admin, slug="other")
    await services.issues.create(admin, title="here")
    await services.issues.create(admin, title="there", project="other")
    here = await services.events.page(admin, project="default", types=["issue.created"])
    there = await services.events.page(admin, project="other", types=["issue.created"])
    assert [e.payload["title"] for e in here.items] == ["here"]
    assert [e.payload["title"] for e in there.items] == ["there"]


async def test_events_of_given_types_across_projects(runtime: Runtime, admin: Caller) -> None:
    """Read with types and no projects (mail's waker does, at every commit: a statement built once
    per set of types), the log gives exactly the events of those types, a `family.*` prefix taken
    as a prefix, and the events every reader gets, in id order, after the id given."""
    services = runtime.services
    await services.projects.create(admin, slug="other")
    for project in ("default", "other"):
        await services.agents.register(admin, name="ann", project=project)
        await services.agents.register(admin, name="bo", project=project)
        await services.messages.send(admin, agent="ann", to=["bo"], subject="hi", body="b", project=project)
        await services.issues.create(admin, title="t", project=project)
    await services.agents.retire(admin, name="bo", project="other")
    async with runtime.db.read() as conn:
        everything = await event_store.after(conn, 0, limit=1000)
        for types in (["message.sent", "agent.retired"], ["issue.*"], ["issue.created"], ["issue_*"]):
            for after in (0, everything[len(everything) // 2].id):
                found = await event_store.after(conn, after, types=types, limit=1000)

                def wanted(e: Event, types: list[str] = types) -> bool:
                    return e.type in event_store.EVERY_READER or any(
                        e.type.startswith(t[:-1]) if t.endswith(".*") else e.type == t for t in types
                    )

                assert [e.id for e in found] == [e.id for e in everything if e.id > after and wanted(e)]
        assert len(await event_store.after(conn, 0, types=["issue.*"], limit=1000)) >= 4


@contextlib.asynccontextmanager
async def _listening(
    postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Runtime, asyncio.Queue[int], asyncpg.Connection]]:
    """A started runtime on PostgreSQL, the ids its events' NOTIFYs carry as they arrive, and the
    listening session (another session of the same database)."""
    rt = Runtime(Settings(database_url=postgres_url, data_dir=tmp_path))
    await rt.start(apply_migrations=True)
    listener = await asyncpg.connect(rt.db.asyncpg_dsn())
    heard: asyncio.Queue[int] = asyncio.Queue()
    await listener.add_listener(event_store.NOTIFY_CHANNEL, lambda *args: heard.put_nowait(int(args[3])))
    try:
        yield rt, heard, listener
    finally:
        await listener.close()
        await rt.stop()


async def test_postgres_gives_event_ids_in_commit_order(
    postgres_url: str, tmp_path: Path, admin: Caller
) -> None:
    """Two transactions append an event each; the later one commits first. Its event gets the
    smaller id (ids are given after the commit, events/sequencer.py), so a reader that has seen it
    never later finds a smaller one, and each NOTIFY carries the newest id a round gave."""
    async with _listening(postgres_url, tmp_path) as (rt, heard, _):
        services = rt.services
        now = services.ctx.clock()
        first_in = rt.db.write()
        early = await first_in.__aenter__()
        await event_store.append(early, now, [event_store.NewEvent("test.early", "t", {}, None)])
        async with rt.db.write() as late:
            await event_store.append(late, now, [event_store.NewEvent("test.late", "t", {}, None)])

        # `test.*` is no family of the catalogue, so a `types` filter refuses it: these two are picked
        # from the page here
        async def tests_events() -> list[Event]:
            page = await services.events.page(admin, limit=1000)
            return [e for e in page.items if e.type.startswith("test.")]

        committed = await tests_events()
        assert [e.type for e in committed] == ["test.late"]
        await first_in.__aexit__(None, None, None)
        both = await tests_events()
        assert [e.type for e in both] == ["test.late", "test.early"]
        late_id, early_id = (e.id for e in both)
        assert late_id == committed[0].id < early_id
        async with asyncio.timeout(10):
            assert [await heard.get(), await heard.get()] == [late_id, early_id]


async def test_postgres_send_is_one_statement(postgres_url: str, tmp_path: Path, admin: Caller) -> None:
    """On PostgreSQL an agent's message, its recipients and its event are one statement, committed by
    itself: the event is given its id once it has committed, and notified; a failure in the
    statement's last part (the event refused) leaves none of it."""
    async with _listening(postgres_url, tmp_path) as (rt, heard, listener):
        services = rt.services
        await services.agents.register(admin, name="w1")
        await services.agents.register(admin, name="w2")
        sent = await services.messages.send(admin, agent="w1", to=["w2"], subject="kept", body="b")
        page = await services.events.page(admin, types=["message.sent"])
        assert [e.payload["id"] for e in page.items] == [sent.id]
        event_id = page.items[0].id
        assert event_id > 0  # given after the commit, not the provisional (negative) id
        async with asyncio.timeout(10):
            while await heard.get() != event_id:
                pass

        await listener.execute(
            "CREATE FUNCTION refuse_lost() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.payload->>'subject' = 'lost' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; "
            "CREATE TRIGGER refuse_lost BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_lost()"
        )
        before = await snapshot(rt.db)
        with pytest.raises(asyncpg.exceptions.RaiseError, match="refused"):
            await services.messages.send(admin, agent="w1", to=["w2"], subject="lost", body="b")
        assert await snapshot(rt.db) == before
        inbox = await services.messages.fetch_inbox(admin, agent="w2")
        assert [i.message.subject for i in inbox.items] == ["kept"]


def _test_event(type_: str) -> event_store.NewEvent:
    return event_store.NewEvent(type_, "t", {}, None)


async def _tests_events(db: Any) -> list[Event]:
    """The `test.*` events readers read (those given their ids)."""
    async with db.read() as conn:
        return [e for e in await event_store.after(conn, 0, limit=1000) if e.type.startswith("test.")]


async def _left_waiting(listener: asyncpg.Connection, type_: str) -> None:
    """An event committed with its provisional id by another session, as a process that died after
    its commit, or a replica of the previous release, leaves it."""
    provisional = f"-nextval('{event_store.PROVISIONAL_SEQUENCE}')"
    await listener.execute(
        "INSERT INTO events (id, time, project_id, type, actor, payload) "
        f"VALUES ({provisional}, now(), NULL, '{type_}', 't', '{{}}')"
    )


@contextlib.asynccontextmanager
async def _event_order_held(listener: asyncpg.Connection) -> AsyncIterator[None]:
    """The event-order lock, held by another session for the block."""
    await listener.execute("SELECT pg_advisory_lock($1)", event_store.EVENT_LOCK_KEY)
    try:
        yield
    finally:
        await listener.execute("SELECT pg_advisory_unlock($1)", event_store.EVENT_LOCK_KEY)


async def test_postgres_event_writes_commit_while_the_event_order_is_held(
    postgres_url: str, tmp_path: Path, admin: Caller
) -> None:
    """A write that carries events takes no lock of the event log as it commits: with the
    event-order lock held by another session, it commits, and its events wait with provisional ids,
    which no reader reads. Once the lock is free, the running sequencer gives them their ids, in
    the order they were written, and one NOTIFY carries the newest."""
    async with _listening(postgres_url, tmp_path) as (rt, heard, listener):
        await rt.start_live()
        async with _event_order_held(listener):
            async with asyncio.timeout(10):  # the write would wait for the lock, until its 15 s bound
                async with rt.db.write() as conn:
                    await event_store.append(
                        conn, rt.services.ctx.clock(), [_test_event("test.a"), _test_event("test.b")]
                    )
                await rt.services.agents.register(
                    admin, name="w1"
                )  # a service's write: it tells the sequencer
            assert await _tests_events(rt.db) == []
            async with rt.db.read() as conn:
                newest_before = await event_store.last_id(conn)
            pending = await listener.fetch("SELECT type FROM events WHERE id < 0 ORDER BY id DESC")
            assert [r["type"] for r in pending] == ["test.a", "test.b", EventType.AGENT_REGISTERED.value]
            assert heard.empty()
        async with asyncio.timeout(10):
            newest = await heard.get()
        ordered = await listener.fetch("SELECT id, type FROM events WHERE id > $1 ORDER BY id", newest_before)
        assert [r["type"] for r in ordered] == ["test.a", "test.b", EventType.AGENT_REGISTERED.value]
        assert [r["id"] for r in ordered] == [newest - 2, newest - 1, newest]  # dense, in written order
        assert await listener.fetchval("SELECT count(*) FROM events WHERE id < 0") == 0
        assert [e.type for e in await _tests_events(rt.db)] == ["test.a", "test.b"]


async def test_postgres_events_written_elsewhere_are_ordered_by_the_sweep(
    postgres_url: str, tmp_path: Path
) -> None:
    """An event that no process of this release will tell the sequencer of (written by a process
    that died after its commit, or by a replica of the previous release during an upgrade) is given
    its id by the sweep of a running sequencer, unasked."""
    async with _listening(postgres_url, tmp_path) as (rt, heard, listener):
        await rt.start_live()
        await _left_waiting(listener, "test.orphan")
        async with asyncio.timeout(10):
            newest = await heard.get()
        assert [(e.id, e.type) for e in await _tests_events(rt.db)] == [(newest, "test.orphan")]


async def test_a_command_s_events_are_ordered_before_its_write_returns(
    postgres_url: str, tmp_path: Path, admin: Caller
) -> None:
    """A process that runs no sequencer (a command) gives its write's events their ids itself,
    before the write returns."""
    rt = Runtime(Settings(database_url=postgres_url, data_dir=tmp_path))
    await rt.start(apply_migrations=True)
    try:
        issue = await rt.services.issues.create(admin, title="from a command")
        async with rt.db.read() as conn:
            recent = await event_store.recent(conn, types=["issue.created"], limit=1)
        assert recent[0].payload["id"] == issue.id
        assert recent[0].id > 0
    finally:
        await rt.stop()


async def test_postgres_a_failed_round_is_told_once_and_its_events_wait_for_the_next(
    postgres_url: str, tmp_path: Path, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that fails (PostgreSQL unreachable, say) is logged once, not once a try; the
    events it would have ordered stay committed and are given their ids by the first round that
    succeeds, which says so."""
    from vibe_ensemble.events import sequencer

    monkeypatch.setattr(sequencer, "SWEEP_S", 0.05)
    real = event_store.order_pending
    failures = 3

    async def failing(conn: Any) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("connection refused")
        return await real(conn)

    async with _listening(postgres_url, tmp_path) as (rt, heard, listener):
        await rt.start_live()
        monkeypatch.setattr(event_store, "order_pending", failing)
        with structlog.testing.capture_logs() as logs:
            await rt.services.agents.register(admin, name="w1")

            def told() -> list[str]:
                return [e["event"] for e in logs if e["event"].startswith("event_order")]

            async with asyncio.timeout(10):
                newest = await heard.get()
                while "event_order_resumed" not in told():  # logged once the round has returned
                    await asyncio.sleep(0.01)
        assert told() == ["event_order_failed", "event_order_resumed"]
        assert failures == 0
        registered = await listener.fetchval("SELECT id FROM events WHERE type = 'agent.registered'")
        assert registered == newest


async def test_postgres_a_read_of_the_log_goes_on_when_its_round_cannot_be_made(
    postgres_url: str, tmp_path: Path, admin: Caller
) -> None:
    """The events API runs a round before it reads; when the database refuses the round (here the
    event-order lock held past the bound), the read is still answered, in id order, without the
    events still waiting, which the next page that can run its round includes."""
    async with _listening(postgres_url, tmp_path) as (rt, _heard, listener):
        before = await rt.services.events.latest_id()
        async with rt.db.write() as conn:
            await event_store.append(conn, rt.services.ctx.clock(), [_test_event("test.waiting")])
        async with _event_order_held(listener):
            rt.db.transaction_timeout_s = 0.5
            page = await rt.services.events.page(admin, after=before)
            assert page.items == [] and page.last_id == before
            assert await rt.services.events.latest_id() == before
        page = await rt.services.events.page(admin, after=before)
        assert [e.type for e in page.items] == ["test.waiting"]


async def test_postgres_a_starting_process_orders_what_waits_at_once(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events left waiting while no process of this release ran (a rollout's first new pod, a
    restart after a crash) are given their ids by the first round, as the sequencer starts, not at
    its first sweep (here an hour away)."""
    from vibe_ensemble.events import sequencer

    monkeypatch.setattr(sequencer, "SWEEP_S", 3600.0)
    async with _listening(postgres_url, tmp_path) as (rt, heard, listener):
        await _left_waiting(listener, "test.left")
        await rt.start_live()
        async with asyncio.timeout(10):
            newest = await heard.get()
        assert [(e.id, e.type) for e in await _tests_events(rt.db)] == [(newest, "test.left")]


async def test_postgres_a_round_that_cannot_be_made_does_not_hold_the_shutdown_up(
    postgres_url: str, tmp_path: Path
) -> None:
    """The sequencer's last round, at shutdown, gives up after `LAST_ROUND_S` (here the event-order
    lock held by another session, which a round would wait for until its 15 s bound); the event
    stays committed, for the next round anywhere."""
    async with _listening(postgres_url, tmp_path) as (rt, _heard, listener):
        await rt.start_live()
        async with _event_order_held(listener):
            async with rt.db.write() as conn:
                await event_store.append(conn, rt.services.ctx.clock(), [_test_event("test.at_shutdown")])
            async with asyncio.timeout(10):
                await rt.stop_live()
        assert await listener.fetchval("SELECT count(*) FROM events WHERE type = 'test.at_shutdown'") == 1
