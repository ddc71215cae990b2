"""HEAD is answered wherever GET is (uptime checkers probe with HEAD): the request runs as GET, the
client gets its status and headers and no body. For a stream that never ends (SSE), the handler is
stopped once the headers are out."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        headers_sent = asyncio.Event()

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                headers_sent.set()

        async def as_get() -> None:
            await self.app({**scope, "method": "GET"}, receive, send_headers_only)

        handler = asyncio.create_task(as_get())
        waiter = asyncio.create_task(headers_sent.wait())
        try:
            await asyncio.wait({handler, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not handler.done():
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
        if not handler.cancelled():
            error = handler.exception()
            if error is not None:
                raise error
