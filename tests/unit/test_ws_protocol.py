"""cli/ws_protocol.py: the receive queue keeps asyncio.Queue's behaviour and the write gate
asyncio.Event's, and uvicorn's WebSocket protocol asks nothing of them that they do not do."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest
import uvicorn
from uvicorn.protocols.websockets import websockets_sansio_impl
from uvicorn.server import ServerState

from vibe_ensemble.cli.ws_protocol import FeedWebSocketProtocol, ReceiveQueue, WriteGate


async def test_items_come_out_in_order_and_a_get_waits_for_one() -> None:
    queue = ReceiveQueue()
    assert queue.empty()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert not queue.empty()
    assert [await queue.get(), await queue.get()] == [1, 2]
    assert queue.empty()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(waiting, 5) == 3


async def test_waiting_getters_are_served_in_the_order_they_came() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert await asyncio.wait_for(asyncio.gather(first, second), 5) == ["a", "b"]


async def test_a_getter_cancelled_after_its_wake_up_passes_the_item_on() -> None:
    queue = ReceiveQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, 5) == "only"
    assert first.cancelled()
    assert queue.empty()


async def test_a_getter_cancelled_while_waiting_leaves_no_trace() -> None:
    queue = ReceiveQueue()
    gone = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    queue.put_nowait("x")
    assert await asyncio.wait_for(queue.get(), 5) == "x"


async def test_the_gate_holds_writers_back_until_it_is_set() -> None:
    gate = WriteGate()
    assert not gate.is_set()
    first = asyncio.create_task(gate.wait())
    second = asyncio.create_task(gate.wait())
    gone = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    assert not (first.done() or second.done())
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 5) == [True, True]
    assert await gate.wait()  # open: at once
    gate.clear()
    blocked = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    assert not blocked.done()
    gate.set()
    assert await asyncio.wait_for(blocked, 5)


@pytest.mark.parametrize(
    ("attribute", "provided"),
    [("queue", {"put_nowait", "get", "empty"}), ("writable", {"set", "clear", "wait"})],
)
def test_uvicorns_protocol_uses_only_what_ours_provide(attribute: str, provided: set[str]) -> None:
    """An upgrade of uvicorn that uses more of its queue or gate fails here, not on a live socket."""
    source = inspect.getsource(websockets_sansio_impl.WebSocketsSansIOProtocol)
    used = set(re.findall(rf"self\.{attribute}\.(\w+)", source))
    assert used, f"uvicorn's protocol no longer keeps self.{attribute}"
    assert used <= provided


async def test_the_protocol_is_uvicorns_with_the_receive_queue() -> None:
    async def app(scope: object, receive: object, send: object) -> None: ...

    config = uvicorn.Config(app, ws=FeedWebSocketProtocol)
    config.load()
    assert config.ws_protocol_class is FeedWebSocketProtocol
    protocol = FeedWebSocketProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    assert isinstance(protocol.queue, ReceiveQueue)
    assert isinstance(protocol.writable, WriteGate) and protocol.writable.is_set()
