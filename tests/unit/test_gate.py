"""The MCP calls' gate (api/gate.py): at most `size` at once, the rest in order of arrival; a place
given back when a call steps aside to wait or starts its answer; cancellation loses no place."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from vibe_ensemble.api import gate as gate_module
from vibe_ensemble.api.gate import (
    CUT_OFF_AT_SHUTDOWN,
    QUEUED_AT_SHUTDOWN,
    Gate,
    NotStarted,
    released_at_answer,
    stepped_aside,
)
from vibe_ensemble.store.database import Database


async def _turns() -> None:
    """Let every task that can run, run (a few turns of the loop)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Held:
    """A call through the gate that holds its place until `release` is set."""

    def __init__(self, gate: Gate, name: str, log: list[str]) -> None:
        self.release = asyncio.Event()
        self.inside = asyncio.Event()
        self.task = asyncio.create_task(self._run(gate, name, log))

    async def _run(self, gate: Gate, name: str, log: list[str]) -> None:
        async with gate.through():
            log.append(name)
            self.inside.set()
            await self.release.wait()


async def test_at_most_size_at_once_and_the_rest_in_order_of_arrival() -> None:
    gate, log = Gate(2), []
    calls = {}
    for name in "abcdef":
        calls[name] = Held(gate, name, log)
        await _turns()
    assert log == ["a", "b"] and gate.inside == 2 and gate.queued == 4
    for finished, next_in in [("b", "c"), ("a", "d"), ("d", "e"), ("c", "f")]:
        calls[finished].release.set()
        await _turns()
        assert log[-1] == next_in and gate.inside == 2
    for call in calls.values():
        call.release.set()
    await asyncio.gather(*(c.task for c in calls.values()))
    assert log == list("abcdef") and gate.inside == 0 and gate.queued == 0


async def test_a_newcomer_does_not_pass_the_queue_when_a_place_frees() -> None:
    """A freed place goes to the first in line, never to a call arriving at that moment."""
    gate, log = Gate(1), []
    first = Held(gate, "first", log)
    await _turns()
    waiting = Held(gate, "waiting", log)
    await _turns()
    first.release.set()
    newcomer = Held(gate, "newcomer", log)  # arrives in the same turn the place is handed on
    await _turns()
    assert log == ["first", "waiting"]
    waiting.release.set()
    newcomer.release.set()
    await asyncio.gather(first.task, waiting.task, newcomer.task)
    assert log == ["first", "waiting", "newcomer"] and gate.inside == 0


async def test_a_call_cancelled_while_queued_leaves_the_queue() -> None:
    gate, log = Gate(1), []
    first = Held(gate, "first", log)
    await _turns()
    gone, after = Held(gate, "gone", log), Held(gate, "after", log)
    await _turns()
    gone.task.cancel()
    await _turns()
    assert gate.queued == 1
    first.release.set()
    await _turns()
    assert log == ["first", "after"] and gate.inside == 1
    after.release.set()
    await asyncio.gather(first.task, after.task)
    assert gate.inside == 0 and gate.queued == 0
    with pytest.raises(NotStarted):
        await gone.task


async def test_a_call_cancelled_just_as_it_is_handed_a_place_passes_it_on() -> None:
    """Handed the place (its turn's future done) and cancelled before it ran: the place goes to the
    next in line, not lost, not counted twice."""
    gate, log = Gate(1), []
    first = gate.through()
    await first.__aenter__()  # this task holds the place
    handed, after = Held(gate, "handed", log), Held(gate, "after", log)
    await _turns()
    await first.__aexit__(None, None, None)  # hands the place on without giving `handed` a turn
    handed.task.cancel()
    await _turns()
    assert log == ["after"] and gate.inside == 1
    after.release.set()
    await after.task
    assert gate.inside == 0 and gate.queued == 0
    with pytest.raises(NotStarted):  # cancelled before it started: nothing of it ran
        await handed.task


async def test_a_call_cancelled_while_queued_as_the_place_passes_over_it_leaves_cleanly() -> None:
    """Cancelled while queued, and in the same turn the place is handed on: the hand-over passes
    over its cancelled turn (taking it out of the queue) before the call itself runs. The call ends
    `NotStarted` (answered 503 `going_away`), never with a ValueError from a queue it is no longer
    in (answered 500 with a traceback, as an outside tester saw at shutdown)."""
    gate, log = Gate(1), []
    first = gate.through()
    await first.__aenter__()  # this task holds the place
    gone, after = Held(gate, "gone", log), Held(gate, "after", log)
    await _turns()
    gone.task.cancel()  # its turn's future is cancelled at once, the task runs later
    await first.__aexit__(None, None, None)  # the place passes over `gone` to `after`
    await _turns()
    assert log == ["after"] and gate.inside == 1 and gate.queued == 0
    with pytest.raises(NotStarted):
        await gone.task
    after.release.set()
    await after.task
    assert gate.inside == 0 and gate.queued == 0


async def test_stepping_aside_lets_the_next_call_in_and_queues_again_after() -> None:
    """A call waiting on another's work (a held `wait_for_messages`) gives its place up meanwhile: the
    call it waits for gets in even through a gate of one."""
    gate, log = Gate(1), []
    mail = asyncio.Event()

    async def waiter() -> None:
        async with gate.through():
            log.append("waiter in")
            async with stepped_aside():
                await mail.wait()
            log.append("waiter back")

    async def sender() -> None:
        async with gate.through():
            log.append("sender in")
            mail.set()
            await _turns()  # the waiter's wait is over, but its place is the sender's until it leaves
            log.append("sender out")

    waiting = asyncio.create_task(waiter())
    await _turns()
    await asyncio.wait_for(asyncio.gather(waiting, sender()), 5)
    assert log == ["waiter in", "sender in", "sender out", "waiter back"]
    assert gate.inside == 0 and gate.queued == 0


async def test_stepping_aside_outside_the_gate_just_runs_the_block() -> None:
    async with stepped_aside():
        pass  # no place to give up (stdio, REST): nothing to count


async def test_a_call_cancelled_while_aside_gives_nothing_back_twice() -> None:
    gate = Gate(1)
    inside = asyncio.Event()

    async def waiter() -> None:
        async with gate.through(), stepped_aside():
            inside.set()
            await asyncio.Event().wait()  # the client goes away meanwhile

    task = asyncio.create_task(waiter())
    await inside.wait()
    assert gate.inside == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.inside == 0 and gate.queued == 0


async def test_a_call_cancelled_while_queueing_to_come_back_gives_nothing_back() -> None:
    gate, log = Gate(1), []
    mail = asyncio.Event()

    async def waiter() -> None:
        async with gate.through(), stepped_aside():
            await mail.wait()

    waiting = asyncio.create_task(waiter())
    await _turns()
    other = Held(gate, "other", log)  # takes the place the waiter gave up
    await _turns()
    mail.set()
    await _turns()
    assert gate.queued == 1  # the waiter, queueing to come back
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    other.release.set()
    await other.task
    assert gate.inside == 0 and gate.queued == 0


async def test_the_place_is_given_back_when_the_answer_starts() -> None:
    """The rest of a call is the client reading its answer: a client slow to read holds nobody up."""
    gate, log = Gate(1), []
    reading = asyncio.Event()
    sent: list[str] = []

    async def slow_client(message: Any) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body":
            await reading.wait()

    async def answered() -> None:
        async with gate.through():
            send = released_at_answer(slow_client)
            async with stepped_aside():  # after the answer has started, not queued for again
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async with stepped_aside():
                pass
            await send({"type": "http.response.body", "body": b"{}"})

    answering = asyncio.create_task(answered())
    await _turns()
    assert sent == ["http.response.start", "http.response.body"]
    next_call = Held(gate, "next", log)
    await asyncio.wait_for(next_call.inside.wait(), 5)
    reading.set()
    next_call.release.set()
    await asyncio.gather(answering, next_call.task)
    assert gate.inside == 0 and gate.queued == 0


async def test_an_answer_started_while_aside_is_not_queued_for_again() -> None:
    """A `subscriptions/listen` stream starts its answer while it waits: its work is over, and the
    end of the wait must not queue it behind the calls that came meanwhile."""
    gate, log = Gate(1), []

    async def sink(message: Any) -> None:
        pass

    async def listen() -> None:
        async with gate.through():
            send = released_at_answer(sink)
            async with stepped_aside():
                await send({"type": "http.response.start", "status": 200, "headers": []})
                other = Held(gate, "other", log)
                await other.inside.wait()  # holds the only place until the stream is over
            await send({"type": "http.response.body", "body": b""})
        other.release.set()
        await other.task

    await asyncio.wait_for(listen(), 5)
    assert gate.inside == 0 and gate.queued == 0


def test_a_gate_lets_at_least_one_call_through() -> None:
    with pytest.raises(ValueError):
        Gate(0)


async def test_back_from_aside_a_call_queues_at_the_front() -> None:
    """It queued once already: the calls that came while it waited do not pass it."""
    gate, log = Gate(1), []
    done_waiting = asyncio.Event()

    async def returning() -> None:
        async with gate.through():
            async with stepped_aside():
                await done_waiting.wait()
            log.append("returning")

    back = asyncio.create_task(returning())
    await _turns()
    inside = Held(gate, "inside", log)  # took the place given up
    await _turns()
    newcomers = [Held(gate, name, log) for name in ("second", "third")]
    await _turns()
    done_waiting.set()
    await _turns()
    inside.release.set()
    await _turns()
    assert log[:3] == ["inside", "returning", "second"]
    for call in newcomers:
        call.release.set()
    await asyncio.gather(back, inside.task, *(c.task for c in newcomers))
    assert gate.inside == 0 and gate.queued == 0


def _own_place() -> str:
    """The state of the current call's place in its gate: held (working), aside or done."""
    place = gate_module._PLACE.get()
    assert place is not None
    return place.state.value


async def test_a_sqlite_write_that_waits_on_the_disk_runs_aside_of_the_gate(tmp_path: Any) -> None:
    """A write that will wait for the one writer, or for a COMMIT on the commit thread (the first
    one is, untimed yet), gives its call's place to the next one meanwhile, and takes it again when
    the write is done."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    db.writes_aside(stepped_aside)
    gate = Gate(2)
    seen: dict[str, int] = {}
    writer_taken = asyncio.Event()
    try:
        async with gate.through():
            async with db.write() as conn:  # the first COMMIT: on the thread
                await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
                seen["first write"] = gate.inside
            seen["after it"] = gate.inside

        async def holding_the_writer() -> None:
            async with gate.through(), db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                writer_taken.set()
                await _turns()  # holds the writer while the other write starts

        async def waiting_for_the_writer() -> None:
            await writer_taken.wait()
            async with gate.through():
                async with db.write() as conn:  # the writer is taken: it waits aside
                    await conn.execute(sa.text("INSERT INTO t VALUES (2)"))
                    seen["waiting write"] = _own_place()  # (the holder may or may not be gone)
                seen["after the waiting write"] = _own_place()

        async with asyncio.timeout(10):
            await asyncio.gather(holding_the_writer(), waiting_for_the_writer())
        async with db.read() as conn:
            assert (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 2
    finally:
        await db.dispose()
    assert seen == {
        "first write": 0,
        "after it": 1,
        "waiting write": "aside",
        "after the waiting write": "held",
    }
    assert gate.inside == 0 and gate.queued == 0


async def test_a_task_a_call_started_that_comes_back_after_the_answer_gives_the_place_back() -> None:
    """A task started during a call carries the call's place (a copy of its context): aside for a
    write while the call answered, it must give back the place it queues for, not keep it for good."""
    gate, log = Gate(1), []
    written = asyncio.Event()
    aside = asyncio.Event()

    async def write_beside() -> None:
        async with stepped_aside():
            aside.set()
            await written.wait()

    async def sink(message: Any) -> None:
        pass

    async def call() -> tuple[asyncio.Task[None], Held]:
        async with gate.through():
            beside = asyncio.create_task(write_beside())
            await aside.wait()  # the place is given up by the task beside
            other = Held(gate, "other", log)  # and taken meanwhile
            await other.inside.wait()
            written.set()
            await _turns()
            assert gate.queued == 1  # the task beside, queueing to come back while `other` works
            send = released_at_answer(sink)
            await send({"type": "http.response.start", "status": 200, "headers": []})
        return beside, other  # the call is over; the task beside is still queued

    beside, other = await asyncio.wait_for(call(), 5)
    other.release.set()  # hands the place to the task beside
    await asyncio.wait_for(asyncio.gather(other.task, beside), 5)
    assert gate.inside == 0 and gate.queued == 0


async def test_a_task_a_call_started_that_steps_aside_after_the_call_gives_nothing_back() -> None:
    gate, log = Gate(1), []
    later = asyncio.Event()

    checked = asyncio.Event()

    async def lives_on() -> None:
        await later.wait()
        async with stepped_aside():  # the call is over: its place is not this task's to give
            await checked.wait()

    async with gate.through():
        survivor = asyncio.create_task(lives_on())
    holder = Held(gate, "holder", log)
    await holder.inside.wait()
    later.set()
    await _turns()
    blocked = Held(gate, "blocked", log)
    await _turns()
    assert log == ["holder"] and gate.inside == 1 and gate.queued == 1  # the holder's place, not freed
    checked.set()
    await survivor
    holder.release.set()
    blocked.release.set()
    await asyncio.gather(holder.task, blocked.task)
    assert gate.inside == 0 and gate.queued == 0


async def test_a_write_waiting_for_another_process_to_let_go_of_the_file_waits_aside(tmp_path: Any) -> None:
    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    db.writes_aside(stepped_aside)
    other = sqlite3.connect(path, isolation_level=None)
    gate = Gate(1)
    seen: list[int] = []
    try:
        async with db.write() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        db._sqlite.commit_s = 0.0  # as after a fast COMMIT: the next write starts in its place
        other.execute("BEGIN IMMEDIATE")  # another process writes

        async def let_go() -> None:
            while gate.inside:  # until the write waits aside
                await asyncio.sleep(0.005)
            seen.append(gate.inside)
            other.execute("COMMIT")

        async def write() -> None:
            async with gate.through(), db.write() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                seen.append(gate.inside)

        async with asyncio.timeout(10):
            await asyncio.gather(write(), let_go())
    finally:
        other.close()
        await db.dispose()
    assert seen == [0, 1]  # aside while the file was locked, back in its place for the write
    assert gate.inside == 0


async def test_a_request_cancelled_while_queued_is_answered_that_it_did_not_start() -> None:
    """The server stopping past its grace cancels the requests still open: one still waiting its turn
    ran nothing, and is told so (`refuse`), not failed with a bare 500; the places are all accounted."""
    gate, log = Gate(1), []
    holder = Held(gate, "holder", log)
    await holder.inside.wait()
    ran: list[str] = []
    refused: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append("app")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    request = {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def refuse(to: Any, why: str) -> None:
        refused.append(why)

    queued = asyncio.create_task(gate.serve(app, {"type": "http"}, request, receive, send, refuse=refuse))
    await _turns()
    assert gate.queued == 1
    queued.cancel()
    await queued  # answered, not cancelled: the web server's task ends with the refusal
    assert ran == [] and refused == [QUEUED_AT_SHUTDOWN] and gate.queued == 0 and gate.inside == 1
    assert queued.cancelling() == 0
    holder.release.set()
    await holder.task
    assert gate.inside == 0


@pytest.mark.parametrize("answer_started", [False, True])
async def test_a_request_cancelled_while_worked_on_is_answered_that_it_was_cut_off(
    answer_started: bool,
) -> None:
    """The server stopping past its grace cancels a request being worked on: before its answer began,
    it is told it was cut off and may not have been carried out (`refuse`), not failed with a bare
    500 and a traceback; once its answer began, the cancellation goes on (the connection is closed).
    Its place is given back either way."""
    gate = Gate(1)
    working = asyncio.Event()
    refused: list[str] = []
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if answer_started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        working.set()
        await asyncio.Event().wait()  # stuck (behind a lock, say)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async def refuse(to: Any, why: str) -> None:
        refused.append(why)

    request = {"type": "http.request", "body": b"{}", "more_body": False}
    served = asyncio.create_task(gate.serve(app, {"type": "http"}, request, receive, send, refuse=refuse))
    await working.wait()
    served.cancel()
    if answer_started:
        with pytest.raises(asyncio.CancelledError):
            await served
        assert refused == []
    else:
        await served  # answered, not cancelled
        assert refused == [CUT_OFF_AT_SHUTDOWN] and served.cancelling() == 0
    assert gate.inside == 0 and gate.queued == 0
