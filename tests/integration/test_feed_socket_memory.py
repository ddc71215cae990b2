"""An open feed socket keeps nothing of its handshake: served by uvicorn with our WebSocket protocol
(cli/ws_protocol.py) on loopback, as `serve` serves it, the handshake's request and response headers
and the scope's copy of the request's headers are let go once the feed runs, and the feed goes on
delivering (docs/live.md: what a socket costs)."""

from __future__ import annotations

import asyncio
import json
import socket

import uvicorn
from websockets.asyncio.client import connect

from vibe_ensemble.api.app import create_app
from vibe_ensemble.cli.ws_protocol import FeedWebSocketProtocol
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.runtime import Runtime


async def test_an_open_feed_socket_lets_go_of_its_handshake_headers(runtime: Runtime) -> None:
    services = runtime.services
    _, token = await services.tokens.create(SYSTEM, role=TokenRole.ADMIN)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(
        create_app(runtime), ws=FeedWebSocketProtocol, log_config=None, ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.01)
            url = f"ws://127.0.0.1:{port}/api/v1/events/ws?project=default&types=agent.registered"
            headers = {"Authorization": f"Bearer {token}", "User-Agent": "feed-test " + "x" * 200}
            async with connect(url, additional_headers=headers) as ws:
                (protocol,) = server.server_state.connections
                assert isinstance(protocol, FeedWebSocketProtocol)
                ready = json.loads(await ws.recv())  # the feed runs: authenticated, subscribed
                assert ready["type"] == "ready"

                assert len(protocol.request.headers) == 0  # the handshake's request: emptied
                assert len(protocol.response.headers) == 0  # and its answer
                assert protocol.scope["headers"] == []  # the app's copy of the request's headers

                for name in ("first", "second"):  # and it goes on delivering
                    await services.agents.register(SYSTEM, project="default", name=name)
                    message = json.loads(await ws.recv())
                    assert message["type"] == "event"
                    event = message["event"]
                    assert event["type"] == "agent.registered" and event["payload"]["agent"] == name
    finally:
        server.should_exit = True
        await serving
