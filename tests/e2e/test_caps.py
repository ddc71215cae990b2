"""Per-credential caps on a real server: open feeds (SSE and WebSocket together) and held
`wait_for_messages` calls (MCP and REST together). Over the cap: 429 `too_many_open` (SSE, REST),
a WebSocket close with 1008 (policy violation), a `[too_many_open]` tool error (MCP). Other
credentials are not affected, and a slot comes back when its connection or call ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed

from ..support import ServerProcess, mcp_client, start_server
from .live_support import listen_request, modern_request, rest, token, ws_connect
from .security_support import error_code

CAPS = {"VIBE_MAX_FEEDS_PER_CREDENTIAL": "2", "VIBE_MAX_WAITS_PER_CREDENTIAL": "2"}
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("caps"), extra_env=CAPS)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.asynccontextmanager
async def sse(server: ServerProcess, secret: str) -> AsyncIterator[httpx2.Response]:
    """An open SSE stream whose first bytes have arrived (the server holds it)."""
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "GET", server.url + "/api/v1/events/stream", headers={"Authorization": f"Bearer {secret}"}
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        chunks = response.aiter_bytes()
        assert await anext(chunks)  # the stream's hello: the server now holds it
        yield response


async def _refused_sse(server: ServerProcess, secret: str) -> dict[str, Any] | None:
    """The error of an SSE request refused at once, or None when it was let in (then closed)."""
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "GET", server.url + "/api/v1/events/stream", headers={"Authorization": f"Bearer {secret}"}
        ) as response,
    ):
        if response.status_code == 200:
            return None
        assert response.status_code == 429, response.status_code
        error: dict[str, Any] = (await response.aread()) and response.json()["error"]
        return error


async def _until(check: Any, what: str, within_s: float = DEADLINE_S) -> Any:
    """Await `check()` until it returns something truthy, within `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_feed_cap_counts_sse_and_websocket_together(server: ServerProcess) -> None:
    async with rest(server.url, server.admin_token) as admin:
        viewer = await token(admin, "viewer")
        other = await token(admin, "viewer")
    async with sse(server, viewer), ws_connect(server.url, viewer) as socket:
        assert (await asyncio.wait_for(socket.recv(), 10)).find('"ready"') >= 0
        # a third feed of the same token: SSE refused with 429 …
        error = await _refused_sse(server, viewer)
        assert error is not None and error["code"] == "too_many_open"
        assert "2 open live feeds" in error["message"] and "VIBE_MAX_FEEDS_PER_CREDENTIAL" in error["message"]
        assert error["details"] == {"kind": "feed", "limit": 2}
        # … and a WebSocket closed with a policy-violation code naming the reason
        async with ws_connect(server.url, viewer) as third:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(third.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason.startswith("too_many_open: ")
        # another credential is not affected
        async with sse(server, other):
            pass
    # both feeds closed: the token may follow the log again (once the server has seen them go)
    await _until(lambda: _let_in(server, viewer), "the feed slots to come back")


async def _let_in(server: ServerProcess, secret: str) -> bool:
    return await _refused_sse(server, secret) is None


async def test_an_sse_client_that_leaves_gives_its_slot_back_at_once(server: ServerProcess) -> None:
    """An SSE stream ends as soon as its client leaves, not at its next write (a keep-alive, 15 s
    after the hello): the feed slot is back within seconds."""
    async with rest(server.url, server.admin_token) as admin:
        viewer = await token(admin, "viewer")
    for _ in range(2):
        async with sse(server, viewer), sse(server, viewer):  # the cap: 2
            assert await _refused_sse(server, viewer) is not None
        await _until(lambda: _let_in(server, viewer), "the slots to come back", within_s=5.0)


async def test_wait_cap_counts_mcp_and_rest_together(server: ServerProcess) -> None:
    async with rest(server.url, server.admin_token) as admin:
        assert (await admin.post("/projects/default/agents", json={"name": "waiter"})).status_code in (
            200,
            201,
        )
        team = await token(admin, "worker", project="default")
        other = await token(admin, "worker", project="default")
    wait_url = "/projects/default/agents/waiter/inbox/wait"
    async with rest(server.url, team) as worker, mcp_client(server.mcp_url, team) as client:
        held = [
            asyncio.create_task(client.call_tool("wait_for_messages", {"agent": "waiter", "timeout_s": 60})),
            asyncio.create_task(worker.get(wait_url, params={"timeout_s": 60})),
        ]

        async def third_refused() -> str | None:
            result = await client.call_tool("wait_for_messages", {"agent": "waiter", "timeout_s": 0})
            text = result.content[0].text if result.is_error else ""  # type: ignore[union-attr]
            return text if error_code(text) == "too_many_open" else None

        text = await _until(third_refused, "two held waits to fill the cap")
        assert "2 held wait_for_messages calls" in text and "VIBE_MAX_WAITS_PER_CREDENTIAL" in text
        r = await worker.get(wait_url, params={"timeout_s": 0})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_open", r.text
        async with rest(server.url, other) as second:  # another credential waits as usual
            assert (await second.get(wait_url, params={"timeout_s": 0})).status_code == 200
        # mail arrives: both held waits return with it, and their slots come back
        sent = await worker.post(
            "/projects/default/messages",
            json={"to": ["waiter"], "subject": "go", "body": "b", "agent": "waiter"},
        )
        assert sent.status_code == 201, sent.text
        by_mcp, by_rest = await asyncio.wait_for(asyncio.gather(*held), DEADLINE_S)
        assert not by_mcp.is_error and by_rest.status_code == 200
        assert by_rest.json()["items"][0]["message"]["subject"] == "go"
        r = await worker.get(wait_url, params={"timeout_s": 0})
        assert r.status_code == 200, r.text


async def test_a_held_wait_whose_client_went_away_gives_its_slot_back_at_once(server: ServerProcess) -> None:
    """A client whose own timeout is shorter than the wait's gives up on it: the server ends the
    wait then (MCP and REST alike), not at its timeout, so the token can wait again at once."""
    async with rest(server.url, server.admin_token) as admin:
        await admin.post("/projects/default/agents", json={"name": "quitter"})
        team = await token(admin, "worker", project="default")
    headers, call = modern_request(
        team,
        "tools/call",
        {"name": "wait_for_messages", "arguments": {"agent": "quitter", "timeout_s": 60}},
        name="wait_for_messages",
    )
    wait_url = server.url + "/api/v1/projects/default/agents/quitter/inbox/wait"
    async with httpx2.AsyncClient(timeout=1.5) as impatient:
        gave_up = await asyncio.gather(
            impatient.post(server.mcp_url, json=call, headers=headers),
            impatient.get(wait_url, params={"timeout_s": 60}, headers={"Authorization": f"Bearer {team}"}),
            return_exceptions=True,
        )
    assert all(isinstance(e, httpx2.TimeoutException) for e in gave_up), gave_up  # both were held
    async with rest(server.url, team) as worker:

        async def waits_again() -> bool:
            r = await worker.get("/projects/default/agents/quitter/inbox/wait", params={"timeout_s": 0})
            return r.status_code == 200

        started = asyncio.get_running_loop().time()
        await _until(waits_again, "the held-wait slots to come back")
        assert asyncio.get_running_loop().time() - started < DEADLINE_S  # not the waits' 60 s


async def test_mcp_listen_streams_count_as_feeds_and_a_get_stream_is_not_offered(
    server: ServerProcess,
) -> None:
    """`subscriptions/listen` holds a stream open as a feed does: it takes one of the credential's
    feed slots. A legacy GET /mcp stream, on which a stateless server could never send anything, is
    answered 405 (the protocol's way to say no such stream is offered), not held open."""
    async with rest(server.url, server.admin_token) as admin:
        viewer = await token(admin, "viewer")
    headers, listen = listen_request(viewer)
    async with contextlib.AsyncExitStack() as streams, httpx2.AsyncClient(timeout=10) as client:
        for _ in range(2):  # the cap (CAPS): both held open
            opened = await streams.enter_async_context(
                client.stream("POST", server.mcp_url, headers=headers, json=listen)
            )
            assert opened.status_code == 200 and "event-stream" in opened.headers["content-type"]
        third = await client.post(server.mcp_url, headers=headers, json=listen)
        refused = third.json()["error"]
        assert refused["message"].startswith("[too_many_open] this token already has 2 open live feeds")
        assert refused["data"] == {"code": "too_many_open", "kind": "feed", "limit": 2}
        assert await _refused_sse(server, viewer) is not None  # the same cap as the REST feeds
    await _until(lambda: _let_in(server, viewer), "the listen slots to come back")
    get = httpx2.get(
        server.mcp_url, headers={"Authorization": f"Bearer {viewer}", "Accept": "text/event-stream"}
    )
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    assert get.json()["error"]["code"] == "method_not_allowed"
