"""A held request (`wait_for_messages`, on MCP and REST) ends when its client goes away.

The web server does not cancel a handler whose client disconnected: a wait would run to its
timeout, holding one of its credential's held waits all along (auth/concurrency.py), so a client
whose own timeout is shorter than the wait's, retrying, ran out of slots for up to a minute. Here
the wait runs beside a watch on the connection; whichever ends first ends the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

from vibe_ensemble.api import gate

T = TypeVar("T")


async def until_disconnected(receive: Receive) -> None:
    """Return once the client has gone (its request's body, if any, was read already, or is read here)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def while_connected(receive: Receive | None, wait: Coroutine[Any, Any, T], gone: T) -> T:
    """`wait`'s result (or its error); `gone` when the client disconnected first, `wait` then
    cancelled and finished, so that what it held is given back before this returns. Without a
    `receive` (stdio: the process is the client) just `wait`."""
    if receive is None:
        return await wait
    async with gate.stepped_aside():
        return await _while_connected(receive, wait, gone)


async def _while_connected(receive: Receive, wait: Coroutine[Any, Any, T], gone: T) -> T:
    waiting = asyncio.ensure_future(wait)
    watching = asyncio.ensure_future(until_disconnected(receive))
    try:
        await asyncio.wait((waiting, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if watching.done() and not watching.cancelled():
            watching.exception()  # retrieved: a receive that failed says only that the client is gone
        watching.cancel()
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    return gone if waiting.cancelled() else waiting.result()
