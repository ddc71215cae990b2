"""At most a few requests' work at once (MCP calls, REST requests); the others wait their turn, in
the order they came.

One process serves everything on one event loop. Fifty agents' calls in flight at once each take
a step in every turn of the loop, so a turn grew to tens of milliseconds: a probe, or the next
step of any call, waited that long (`/healthz` p99 57-253 ms under the 50-agent swarm). Through
the gate, a few calls run and the others wait, suspended, costing the loop nothing; each finished
call lets the next one in. The work done is the same; a turn of the loop is short, and a call's
time is its place in the queue plus its own work (bench/RESULTS.md, twenty-fourth round).

A place is held only while the server works: the request's body is read before it queues
(`whole_body` for MCP, `GatedRoute` for REST), and the place is given up when the answer starts
(`released_at_answer`; a REST answer is sent after its handler has left the gate), so a client slow
to send or to read holds nobody up. A call that waits for something another request
brings (`wait_for_messages`, a `subscriptions/listen` stream) steps aside (`stepped_aside`): its
place goes to the next in line while it waits, and it queues again, at the front, for the rest of
its work. So does a SQLite write that will wait on the disk, for its whole transaction
(store/sqlite.py `aside`): when the one writer is taken, COMMITs are slow enough to run on the
commit thread, or another process holds the file's lock, reads and other calls go on meanwhile,
and the writes that come share the next COMMIT. A PostgreSQL connection is held only by calls
already in (the gate is the pool's size there), so nothing a call awaits depends on a request still
queued: the gate cannot close on itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibe_ensemble.api.auth import error_response
from vibe_ensemble.domain.errors import ShuttingDown


class NotStarted(Exception):
    """A request cancelled while it waited its turn: the server stopping, its shutdown's grace run out
    (uvicorn cancels the requests still open). Nothing of it ran, so it is answered that it may be sent
    again (503, `Retry-After`) rather than with a bare 500 and a traceback in the log; its task, the
    web server's, ends with that answer, so the cancellation is not passed on."""


QUEUED_AT_SHUTDOWN = (
    "the server is shutting down and this request was still waiting its turn: nothing of it ran; send "
    "it again (to another replica)"
)
CUT_OFF_AT_SHUTDOWN = (
    "the server is shutting down and stopped this request while working on it: it may not have been "
    "carried out; look before sending it again (to another replica)"
)


class _State(enum.Enum):
    HELD = "held"  # working
    ASIDE = "aside"  # waiting on others' work; queues again when the wait ends
    DONE = "done"  # answering: the work is over, the place is given back


class _Place:
    """One call's place in a gate."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.state = _State.HELD


# The place of the call being served (the SDK's tasks for it inherit the context, so they see the
# same place object)
_PLACE: ContextVar[_Place | None] = ContextVar("vibe_gate_place", default=None)


class Gate:
    """A first-come first-served limit of `size` calls at once."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a gate lets at least one call through")
        self.size = size
        self.inside = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def serve(
        self,
        app: ASGIApp,
        scope: Scope,
        request: Message,
        receive: Receive,
        send: Send,
        *,
        refuse: Callable[[Send, str], Awaitable[None]],
    ) -> None:
        """An HTTP request to `app` through the gate, its whole body (`request`, from `whole_body`)
        read before it queued, so a client slow to send held no place; the place is given back when
        the answer starts. Cancelled (the server stopping past its grace) before its answer started,
        it is answered by `refuse` with why: never started (`QUEUED_AT_SHUTDOWN`, see `NotStarted`),
        or cut off while it was worked on (`CUT_OFF_AT_SHUTDOWN`), not with a bare 500."""
        pending = [request]
        answering = False

        async def _receive() -> Message:
            return pending.pop() if pending else await receive()

        async def _send(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        try:
            async with self.through():
                await app(scope, _receive, released_at_answer(_send))
        except NotStarted:
            await refuse(send, QUEUED_AT_SHUTDOWN)
            ended_by_answer()
        except asyncio.CancelledError:
            if answering:
                raise  # the answer is on its way: the web server closes the connection
            await refuse(send, CUT_OFF_AT_SHUTDOWN)
            ended_by_answer()

    @asynccontextmanager
    async def through(self) -> AsyncIterator[None]:
        """Hold a place for the block, queueing for it first when all are taken (`NotStarted` when
        cancelled meanwhile)."""
        try:
            await self._enter()
        except asyncio.CancelledError as cancelled:
            raise NotStarted from cancelled
        place = _Place(self)
        token = _PLACE.set(place)
        try:
            yield
        finally:
            _PLACE.reset(token)
            if place.state is _State.HELD:
                self._leave()
            # Over: a task started during the call carries this place in its copy of the context, and
            # must find nothing left to give up (twice given back, the gate would let one more in).
            place.state = _State.DONE

    async def _enter(self, *, again: bool = False) -> None:
        """Take a place, or queue for one: at the back, or `again` (back from a wait aside, having
        queued once already) at the front."""
        if self.inside < self.size and not self._queue:
            self.inside += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if again:
            self._queue.appendleft(turn)
        else:
            self._queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a place just as it was cancelled
                self._leave()
            else:
                with contextlib.suppress(ValueError):  # a hand-over passed over it already, taking it out
                    self._queue.remove(turn)
            raise

    def _leave(self) -> None:
        """Hand this place to the first in line (it stays taken), or free it."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.inside -= 1


@asynccontextmanager
async def stepped_aside() -> AsyncIterator[None]:
    """For a wait on another request's work or on the disk: the place this call holds (if any) goes
    to the next in line for the block's duration, and is queued for again after it, at the front of
    the line (unless the answer has started meanwhile: then the work is over). Inside a block that
    stepped aside already, nothing more."""
    place = _PLACE.get()
    if place is None or place.state is not _State.HELD:
        yield
        return
    place.state = _State.ASIDE
    place.gate._leave()
    try:
        yield
    finally:
        if place.state is _State.ASIDE:
            await place.gate._enter(again=True)  # cancelled (the client gone): the place stays given up
            if place.state is _State.ASIDE:
                place.state = _State.HELD
            else:  # the call answered, or ended, while this queued (a task it started was aside)
                place.gate._leave()


def released_at_answer(send: Send) -> Send:
    """`send`, giving up the current call's place when its answer starts: the rest is the client's
    reading, which must not hold the next call up."""
    place = _PLACE.get()
    if place is None:
        return send

    async def _send(message: Message) -> None:
        if message["type"] == "http.response.start":
            if place.state is _State.HELD:
                place.gate._leave()
            place.state = _State.DONE
        await send(message)

    return _send


class GatedRoute(APIRoute):
    """A REST route whose handler runs through the app's gate (`app.state.gate`): the request's body
    read first, and the answer sent after the handler has returned, outside. One cut off while it
    was worked on is answered by `api/app.DrainMiddleware`, as every other request is."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def gated(request: Request) -> Response:
            gate: Gate | None = getattr(request.app.state, "gate", None)
            if gate is None:
                return await handler(request)
            await request.body()  # kept by the request for the handler
            try:
                async with gate.through():
                    return await handler(request)
            except NotStarted:
                ended_by_answer()
                return error_response(ShuttingDown(QUEUED_AT_SHUTDOWN))

        return gated


def ended_by_answer() -> None:
    """The request's task, cancelled by the web server as it stops (at the end of its shutdown grace),
    has answered why: it ends with that answer, so the cancellation is not passed on (uvicorn would
    log it as a failure of the app, with a traceback, for every request it cut off)."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def whole_body(receive: Receive) -> Message:
    """The request's body as one `http.request` message, or the `http.disconnect` that cut it short
    (the body's size and time limits are api/security.BodyLimitMiddleware's, outside)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
