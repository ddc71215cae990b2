"""Feeds follow the event log: every event of the filter once, in id order, across resumes;
a subscriber that cannot keep up is cut off without holding anyone else up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vibe_ensemble.api.feeds.sse import EventStream
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.models import Event
from vibe_ensemble.events.feed import Feed, RecentEvents
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import events as event_store


@pytest.fixture
async def live(runtime: Runtime) -> Runtime:
    await runtime.start_live()
    return runtime


async def drain(feed: Feed, until: int, timeout: float = 5.0) -> list[Event]:
    """Everything the feed hands out until it has reached event `until`."""
    got: list[Event] = []
    async with asyncio.timeout(timeout):
        while feed.last_id < until:
            got.extend(await feed.next(timeout))
    return got


async def test_feed_hands_out_every_event_once_in_order_and_resumes(
    live: Runtime, services: Services, admin: Caller
) -> None:
    start = await services.events.latest_id()
    feed = await services.live.feed(admin, after=start)
    await services.agents.register(admin, name="w1")
    for i in range(3):
        await services.issues.create(admin, title=f"issue {i}", agent="w1")
    first = await drain(feed, await services.events.latest_id())
    truth = (await services.events.page(admin, after=start)).items
    assert [e.id for e in first] == [e.id for e in truth]
    assert [e.id for e in first] == sorted({e.id for e in first})

    # The subscriber goes away; events are written meanwhile; it resumes from its last id.
    resume_at = feed.last_id
    for i in range(150):  # more than one page
        await services.issues.comment(admin, truth[-1].payload["id"], f"note {i}", agent="w1")
    resumed = await services.live.feed(admin, after=resume_at)
    rest = await drain(resumed, await services.events.latest_id())
    truth = (await services.events.page(admin, after=resume_at, limit=1000)).items
    assert [e.id for e in rest] == [e.id for e in truth]
    assert len(rest) == 150
    assert rest[0].id > resume_at


async def test_concurrent_writers_reach_a_following_feed_once_and_in_order(
    live: Runtime, services: Services, admin: Caller
) -> None:
    # On PostgreSQL the writes run at once on several pooled connections: the event order lock
    # (store/events.py) is what keeps ids committing in order, so a feed never steps past one
    # that commits later.
    await services.agents.register(admin, name="w1")
    issue = await services.issues.create(admin, title="busy", agent="w1")
    start = await services.events.latest_id()
    feed = await services.live.feed(admin, after=start)
    seen: list[int] = []

    async def follow() -> None:
        while len(seen) < 60:
            seen.extend(e.id for e in await feed.next(0.2))

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(services.issues.comment(admin, issue.id, f"n{i}", agent="w1") for i in range(60)))
    await asyncio.wait_for(follower, 30)
    truth = [e.id for e in (await services.events.page(admin, after=start, limit=1000)).items]
    assert seen == truth and len(truth) == 60


async def test_feed_from_now_on_skips_the_past(live: Runtime, services: Services, admin: Caller) -> None:
    await services.agents.register(admin, name="old")
    feed = await services.live.feed(admin)
    assert feed.last_id == await services.events.latest_id()
    waiting = asyncio.create_task(feed.next(5.0))
    agent = await services.agents.register(admin, name="new")
    events = await asyncio.wait_for(waiting, 5.0)
    assert [(e.type, e.payload["agent"]) for e in events] == [("agent.registered", agent.name)]


async def test_feed_filters_types_and_projects(live: Runtime, services: Services, admin: Caller) -> None:
    await services.projects.create(admin, slug="other")
    start = await services.events.latest_id()
    issues_only = await services.live.feed(admin, types=["issue.*"], after=start)
    other_only = await services.live.feed(admin, project="other", after=start)
    scoped = Caller(credential_id=None, role=TokenRole.VIEWER, project="other")
    scoped_feed = await services.live.feed(scoped, after=start)

    await services.agents.register(admin, name="w1")
    await services.agents.register(admin, name="w2", project="other")
    issue = await services.issues.create(admin, title="here", agent="w1")
    await services.issues.create(admin, title="there", agent="w2", project="other")
    latest = await services.events.latest_id()

    got = await drain(issues_only, latest)
    assert {e.type for e in got} == {"issue.created", "issue.ready"}
    assert {e.project for e in got} == {"default", "other"}
    assert got[0].payload["id"] == issue.id
    for feed in (other_only, scoped_feed):
        got = await drain(feed, latest)
        assert {e.project for e in got} == {"other"}
        assert [e.type for e in got] == ["agent.registered", "issue.created", "issue.ready"]
    # A filtered feed whose last events do not match still waits, rather than spinning.
    assert await issues_only.next(0.05) == []


async def test_feed_refuses_bad_input_and_other_projects(
    live: Runtime, services: Services, admin: Caller
) -> None:
    with pytest.raises(InvalidInput) as bad:
        await services.live.feed(admin, types=["issue.*", "DROP TABLE"])
    assert bad.value.details["field"] == "types"
    with pytest.raises(InvalidInput) as bad:
        await services.live.feed(admin, types=[f"t{i}" for i in range(21)])
    assert bad.value.details["field"] == "types"
    with pytest.raises(InvalidInput) as bad:
        await services.live.feed(admin, after=-1)
    assert bad.value.details["field"] == "after"
    await services.projects.create(admin, slug="other")
    scoped = Caller(credential_id=None, role=TokenRole.VIEWER, project="other")
    with pytest.raises(PermissionDenied):
        await services.live.feed(scoped, project="default")


async def test_feed_ends_when_the_server_shuts_down(live: Runtime, services: Services, admin: Caller) -> None:
    feed = await services.live.feed(admin)
    waiting = asyncio.create_task(feed.next(30.0))
    live.begin_shutdown()
    assert await asyncio.wait_for(waiting, 2.0) == []
    assert feed.closed


class Sink:
    """An ASGI `send` for an event stream: collects what is written, or stops taking it (a client that
    does not read) once `stall_after` body chunks went through."""

    def __init__(self, stall_after: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.stall_after = stall_after
        self.stalled = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if self.stall_after is not None and len(self.chunks) >= self.stall_after:
            self.stalled.set()
            await asyncio.Event().wait()  # the socket is full, for good
        self.chunks.append(message["body"])

    def ids(self) -> list[int]:
        text = b"".join(self.chunks).decode()
        return [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def cut_offs() -> float:
    labels = {"transport": "sse", "reason": "slow_consumer"}
    return metrics.REGISTRY.get_sample_value("vibe_feed_disconnects_total", labels) or 0.0


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_subscriber_that_stops_reading_is_cut_off_and_the_others_go_on(
    live: Runtime, services: Services, admin: Caller, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, feed_send_timeout_s=0.3, feed_keepalive_s=5)

    async def valid() -> bool:
        return True

    await services.agents.register(admin, name="w1")
    start = await services.events.latest_id()
    slow, healthy = Sink(stall_after=2), Sink()  # the slow one takes the greeting and one chunk
    slow_stream = EventStream(await services.live.feed(admin, after=start), settings, valid)
    healthy_stream = EventStream(await services.live.feed(admin, after=start), settings, valid)
    before = cut_offs()
    scope: dict[str, Any] = {"type": "http"}
    slow_task = asyncio.create_task(slow_stream(scope, never_disconnects, slow.send))
    healthy_task = asyncio.create_task(healthy_stream(scope, never_disconnects, healthy.send))

    await services.issues.create(admin, title="first", agent="w1")
    await until(lambda: len(slow.chunks) == 2)
    for i in range(5):
        await services.issues.create(admin, title=f"issue {i}", agent="w1")
    latest = await services.events.latest_id()
    await asyncio.wait_for(slow.stalled.wait(), 5.0)
    # The stalled client is cut off about `feed_send_timeout_s` after it stopped taking data...
    await until(lambda: cut_offs() > before)
    # ...while the healthy one got everything, in order.
    await until(lambda: bool(healthy.ids()) and healthy.ids()[-1] == latest)
    assert healthy.ids() == list(range(start + 1, latest + 1))
    # The slow one got a whole prefix; the stream says where it stopped, to resume from there.
    assert slow.ids() == list(range(start + 1, slow.ids()[-1] + 1))
    assert slow.ids()[-1] < latest
    assert slow_stream.sent_id == slow.ids()[-1]
    assert not slow_task.done()  # waiting, for a bounded time, for the client to read the reason
    slow_task.cancel()
    live.begin_shutdown()
    await asyncio.wait_for(healthy_task, 5.0)
    assert b"event: error" in healthy.chunks[-1]
    assert b"going_away" in healthy.chunks[-1]


async def test_many_feeds_cost_one_read_per_commit(
    live: Runtime, services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = await services.events.latest_id()
    feeds = [await services.live.feed(admin, after=start) for _ in range(30)]
    filtered = await services.live.feed(admin, after=start, types=["agent.*", "issue.ready"])
    await services.agents.register(admin, name="w1")
    for feed in [*feeds, filtered]:  # each starts with a look at the table
        assert [e.type for e in await feed.next(5.0)] == ["agent.registered"]
    newest = await services.events.latest_id()
    async with asyncio.timeout(5):  # the router has read that commit too (for the window)
        while services.live.recent.newest < newest:
            await asyncio.sleep(0.01)
    reads = 0
    real_after = event_store.after

    async def counting_after(*args: Any, **kwargs: Any) -> list[Event]:
        nonlocal reads
        reads += 1
        return await real_after(*args, **kwargs)

    monkeypatch.setattr(event_store, "after", counting_after)
    issue = await services.issues.create(admin, title="one commit, two events", agent="w1")
    for feed in feeds:
        got = await feed.next(5.0)
        assert [(e.type, e.payload["id"]) for e in got] == [
            ("issue.created", issue.id),
            ("issue.ready", issue.id),
        ]
    assert [e.type for e in await filtered.next(5.0)] == ["issue.ready"]
    assert reads == 1  # one shared read for all 31 feeds


async def test_a_commit_wakes_the_feeds_of_its_project_only(
    live: Runtime, services: Services, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feeds of a project that gets no event sleep through other projects' commits; the feeds of
    the project and the ones that follow every project get each event once."""
    await services.projects.create(admin, slug="quiet")
    await services.agents.register(admin, name="w1")
    start = await services.events.latest_id()
    busy = [await services.live.feed(admin, project="default", after=start) for _ in range(5)]
    quiet = [await services.live.feed(admin, project="quiet", after=start) for _ in range(5)]
    everything = await services.live.feed(admin, after=start)
    for feed in [*busy, *quiet, everything]:  # each starts with a look at the table (nothing yet)
        assert await feed.next(0.01) == []
    looks: dict[int, int] = {}
    real_read = Feed._read

    async def counting_read(feed: Feed) -> list[Event]:
        looks[id(feed)] = looks.get(id(feed), 0) + 1
        return await real_read(feed)

    monkeypatch.setattr(Feed, "_read", counting_read)
    got: dict[int, list[int]] = {id(f): [] for f in [*busy, *quiet, everything]}

    async def follow(feed: Feed) -> None:
        while True:
            got[id(feed)].extend(e.id for e in await feed.next(30.0))

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(follow(f)) for f in [*busy, *quiet, everything]]
        async with asyncio.timeout(5):  # each feed looks at the window once, then waits on its bell
            while len(looks) < len(tasks):
                await asyncio.sleep(0.01)
        looks.clear()
        for i in range(5):
            await services.issues.create(admin, title=f"issue {i}", agent="w1")
        truth = [e.id for e in (await services.events.page(admin, after=start)).items]
        async with asyncio.timeout(5):
            while any(got[id(f)] != truth for f in [*busy, everything]):
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
    assert len(truth) == 10  # issue.created and issue.ready, five times
    assert all(looks.get(id(f), 0) == 0 for f in quiet)  # never woken
    assert all(got[id(f)] == [] for f in quiet)
    assert all(1 <= looks[id(f)] <= 5 for f in [*busy, everything])  # at most one look per commit


async def test_a_feed_far_behind_catches_up_from_the_table(
    live: Runtime, services: Services, admin: Caller
) -> None:
    hub = services.ctx.hub
    recent = RecentEvents(hub, services.ctx.db, capacity=5)
    await recent.start()
    start = await services.events.latest_id()
    assert await recent.after(start) == ([], start)
    # Open while the events come (the router reads them for open feeds only); it reads nothing yet.
    feed = Feed(hub, services.ctx.db, recent, after=start, project=None, types=None, page_size=4)
    try:
        await services.agents.register(admin, name="w1")
        for i in range(10):
            await services.issues.create(admin, title=f"issue {i}", agent="w1")
        latest = await services.events.latest_id()
        async with asyncio.timeout(5):
            while recent.newest < latest:
                await asyncio.sleep(0.01)
        window = await recent.after(latest - 3)
        assert window is not None and [e.id for e in window[0]] == [latest - 2, latest - 1, latest]
        assert await recent.after(start) is None  # the window moved on: a feed this behind reads the table
        assert await recent.after(start, "default") is None  # so does one of the project whose events left it
        # A feed of a project none of whose events left the window is still served by it.
        quiet = await recent.after(start, "quiet")
        assert quiet is not None and quiet[1] == latest
        assert quiet[0][-1].id == latest and {e.project for e in quiet[0]} == {"default"}
        got = await drain(feed, latest)
        assert [e.id for e in got] == list(range(start + 1, latest + 1))
    finally:
        feed.close()
        await recent.stop()


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        # the database unreachable (an OSError is one): said as such, reconnect in 5 s
        (OSError("the disk went away"), "database_unavailable"),
        (RuntimeError("a bug"), "internal"),
    ],
)
async def test_a_stream_that_cannot_read_the_log_ends_with_the_reason(
    live: Runtime,
    services: Services,
    admin: Caller,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    code: str,
) -> None:
    async def valid() -> bool:
        return True

    async def broken(*args: Any, **kwargs: Any) -> list[Event]:
        raise failure

    sink = Sink()
    stream = EventStream(await services.live.feed(admin, after=0), Settings(data_dir=tmp_path), valid)
    monkeypatch.setattr(event_store, "after", broken)
    await asyncio.wait_for(stream({"type": "http"}, never_disconnects, sink.send), 5.0)
    assert b"event: error" in sink.chunks[-1]
    assert f'"code": "{code}"'.encode() in sink.chunks[-1]
    assert b'"last_id": 0' in sink.chunks[-1]


async def test_an_event_nobody_announced_still_reaches_a_quiet_feed(
    live: Runtime, services: Services, admin: Caller
) -> None:
    """The safety net: an event committed without a wake-up (as when another replica's NOTIFY is
    lost) reaches a feed after its quiet spell, by one check of the table for the whole process."""
    start = await services.events.latest_id()
    feeds = [await services.live.feed(admin, after=start) for _ in range(3)]
    for feed in feeds:  # each has read the table once, found nothing, and now waits for the hub
        assert await feed.next(0.01) == []
    async with live.db.write() as conn:  # behind the hub's back: no publish
        now = services.ctx.clock()
        await event_store.append(conn, now, [event_store.NewEvent("ghost.event", "ghost", {}, None)])
    ghost = await services.events.latest_id()
    sqlite = live.db.is_sqlite  # (PostgreSQL's NOTIFY reaches the hub through the bridge anyway)
    assert services.ctx.hub.latest < ghost or not sqlite
    reads = 0
    real_last_id = event_store.last_id

    async def counting_last_id(*args: Any, **kwargs: Any) -> int:
        nonlocal reads
        reads += 1
        return await real_last_id(*args, **kwargs)

    event_store.last_id = counting_last_id  # type: ignore[assignment]
    try:
        async with asyncio.timeout(10):
            for feed in feeds:
                got: list[Event] = []
                while not got:
                    got = await feed.next(0.2)
                assert [e.id for e in got] == [ghost]
    finally:
        event_store.last_id = real_last_id  # type: ignore[assignment]
    assert 1 <= reads <= 2 or not sqlite  # one look at the table served the three feeds
