"""uvicorn's WebSocket protocol with a lighter queue and gate, for thousands of open feed sockets.

uvicorn keeps an `asyncio.Queue` for each WebSocket, to hand the app what the client sent, and an
`asyncio.Event` that holds writers back while the transport's buffer is full. Empty, the queue
holds three deques and an Event, and an Event holds a deque: about 3.8 KB for each open socket, an
eighth of what a feed's socket cost the server (bench/live_latency.py), for a queue that holds a
message or two and a gate that is nearly always open. `ReceiveQueue` and `WriteGate` do what the
protocol asks of them in a few hundred bytes; tests/unit/test_ws_protocol.py checks that the
protocol asks nothing more.

Once the handshake is answered, its request and response are not read again, but the protocol
keeps both for the life of the socket (the library's parser holds the request, uvicorn both): their
headers go as soon as the accept is sent (`FeedWebSocketProtocol.start_keepalive`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class ReceiveQueue:
    """An unbounded queue with what uvicorn's protocol uses of `asyncio.Queue`: `put_nowait`,
    `get` and `empty`. Items come out in the order they were put; waiting getters are served in
    the order they came, and one that is cancelled passes its wake-up on, so no item waits while
    a getter does."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []  # a list, not a deque: an empty deque is already 600 bytes
        self._getters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._items:  # woken, then cancelled: the item it was woken for goes to the next
                    self._wake_one()
                raise
        return self._items.pop(0)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class WriteGate:
    """What uvicorn's protocol uses of `asyncio.Event` (`set`, `clear`, `wait`), its waiters in a
    list rather than a deque (600 bytes even when empty)."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class FeedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's own WebSocket protocol (`websockets-sansio`, its default), with a `ReceiveQueue`
    and a `WriteGate`, that lets go of the handshake's headers once it is answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = WriteGate()  # type: ignore[assignment]
        self.writable.set()  # open, as uvicorn's own starts

    def start_keepalive(self) -> None:
        # uvicorn calls this once, as soon as the accept is sent: the handshake's request and response
        # are read by uvicorn and the library while it is answered, never after it (the app has its
        # own copy of the request's headers, in its scope): about 4.5 KB a socket (docs/live.md).
        # The response is uvicorn's alone; the request is held by the library's parser too, so it is
        # emptied rather than let go. (Here, not in `send`: that runs for every event delivered.)
        super().start_keepalive()
        self.request.headers.clear()
        self.response.headers.clear()
