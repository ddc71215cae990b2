"""The gate of requests at once (MCP and REST) on a real server, at its narrowest
(`VIBE_MAX_CALLS_AT_ONCE=1`): a call that waits on others' work (a held `wait_for_messages` on MCP
or REST, a `subscriptions/listen` stream, an SSE feed) and a client slow to send its body hold no
place, so the calls they wait for, and everyone else's, still run; calls their clients gave up on
give every place back; calls still queued when a stopping server's grace runs out are refused and
never run (PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx2
import pytest

from ..postgres_pool import dsn
from ..support import ServerProcess, call, mcp_client, start_server
from .live_support import listen_request, metric, modern_request, rest, token

# Well inside the wait's 30 s and the body's 30 s stall limit: a call queued behind either would miss it.
ANSWERED_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("gate"), extra_env={"VIBE_MAX_CALLS_AT_ONCE": "1"})
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.asynccontextmanager
async def _in_time() -> AsyncIterator[None]:
    """The block must be done within ANSWERED_WITHIN_S. Timed, not only cancelled at the deadline:
    the SDK client's task groups can hold a cancellation back until its call is answered."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(ANSWERED_WITHIN_S):
        yield
    took = loop.time() - started
    assert took < ANSWERED_WITHIN_S, f"answered after {took:.1f} s: it queued behind a held place"


async def _worker(server: ServerProcess, *agents: str) -> str:
    async with rest(server.url, server.admin_token) as admin:
        for name in agents:
            r = await admin.post("/projects/default/agents", json={"name": name})
            assert r.status_code in (200, 201), r.text
        return await token(admin, "worker", project="default")


async def _until_waiting(server: ServerProcess, count: int) -> None:
    """Until `count` agents are held in wait_for_messages (the server's own gauge says so)."""
    async with asyncio.timeout(ANSWERED_WITHIN_S):
        while await asyncio.to_thread(metric, server.url, "vibe_mail_waiters") < count:
            await asyncio.sleep(0.05)


async def test_a_held_wait_lets_the_mail_it_waits_for_through(server: ServerProcess) -> None:
    team = await _worker(server, "gate-waiter", "gate-sender")
    async with mcp_client(server.mcp_url, team) as waiter, mcp_client(server.mcp_url, team) as sender:
        held = asyncio.create_task(call(waiter, "wait_for_messages", agent="gate-waiter", timeout_s=30))
        await _until_waiting(server, 1)
        async with _in_time():
            await call(
                sender, "send_message", agent="gate-sender", to=["gate-waiter"], subject="go", body="b"
            )
            woken = await held
    assert [i["message"]["subject"] for i in woken["items"]] == ["go"]


async def test_an_open_listen_stream_holds_no_place(server: ServerProcess) -> None:
    team = await _worker(server, "gate-listener")
    headers, listen = listen_request(team)
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream("POST", server.mcp_url, headers=headers, json=listen) as stream,
    ):
        assert stream.status_code == 200 and "event-stream" in stream.headers["content-type"]
        async with _in_time(), mcp_client(server.mcp_url, team) as client:  # its handshake too
            page = await call(client, "fetch_inbox", agent="gate-listener")
    assert page["items"] == []


@pytest.mark.parametrize("path", ["/mcp", "/api/v1/projects/default/messages"])
async def test_a_client_stalled_mid_body_holds_no_place(server: ServerProcess, path: str) -> None:
    team = await _worker(server, "gate-slow")
    host = server.url.removeprefix("http://")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {team}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        "MCP-Protocol-Version: 2025-06-18\r\nContent-Length: 400\r\n\r\n"
        '{"jsonrpc": "2.0", "id": 1, '  # and the rest never comes
    )
    address, port = host.rsplit(":", 1)
    _, writer = await asyncio.open_connection(address, int(port))
    try:
        writer.write(head.encode())
        await writer.drain()
        async with _in_time(), mcp_client(server.mcp_url, team) as client:
            page = await call(client, "fetch_inbox", agent="gate-slow")
        assert page["items"] == []
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_an_open_sse_feed_and_a_held_rest_wait_hold_no_place(server: ServerProcess) -> None:
    team = await _worker(server, "gate-rest")
    auth = {"Authorization": f"Bearer {team}"}
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream("GET", server.url + "/api/v1/events/stream", headers=auth) as feed,
        rest(server.url, team) as worker,
    ):
        assert feed.status_code == 200
        held = asyncio.create_task(
            worker.get("/projects/default/agents/gate-rest/inbox/wait", params={"timeout_s": 30})
        )
        await _until_waiting(server, 1)
        async with _in_time():
            sent = await worker.post(
                "/projects/default/messages",
                json={"to": ["gate-rest"], "subject": "rest", "body": "b", "agent": "gate-rest"},
            )
            assert sent.status_code == 201, sent.text
            woken = await held
    assert [i["message"]["subject"] for i in woken.json()["items"]] == ["rest"]


async def test_calls_given_up_by_their_clients_give_every_place_back(server: ServerProcess) -> None:
    """A hundred calls at once through a gate of one, their clients gone after 20 ms, before most are
    answered (a hundred calls one at a time take longer than that, however fast the machine: with
    twenty, a fast one answered them all in time): the server's gauges come back to nobody working
    and nobody queued, and the next call is answered."""
    team = await _worker(server, "gate-quitter")
    headers, body = modern_request(
        team,
        "tools/call",
        {"name": "fetch_inbox", "arguments": {"agent": "gate-quitter"}},
        name="fetch_inbox",
    )
    async with httpx2.AsyncClient(timeout=0.02) as impatient:
        outcomes = await asyncio.gather(
            *(impatient.post(server.mcp_url, json=body, headers=headers) for _ in range(100)),
            return_exceptions=True,
        )
    assert any(isinstance(o, httpx2.TimeoutException) for o in outcomes), outcomes
    async with asyncio.timeout(ANSWERED_WITHIN_S):
        while (
            await asyncio.to_thread(metric, server.url, "vibe_calls_working"),
            await asyncio.to_thread(metric, server.url, "vibe_calls_queued"),
        ) != (0.0, 0.0):
            await asyncio.sleep(0.05)
    exposed = httpx2.get(server.url + "/metrics", timeout=5).text  # the gauges are there, not just absent
    assert "\nvibe_calls_working 0.0\n" in exposed and "\nvibe_calls_queued 0.0\n" in exposed
    async with _in_time(), mcp_client(server.mcp_url, team) as client:
        assert (await call(client, "fetch_inbox", agent="gate-quitter"))["items"] == []


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
async def test_calls_a_stopping_server_cuts_off_are_told_why_and_the_queued_ones_never_ran(
    tmp_path: Path, postgres_url: str, workers: int
) -> None:
    """A gate of one in each worker, held by calls stuck behind a table lock another session holds
    (a REST call first); the other calls (MCP and REST) queue behind them, and a dashboard page (not
    gated) waits for the lock too. SIGTERM, and a grace of one second runs out: every request is
    answered 503 `going_away` with Retry-After, as JSON-RPC or REST's error — those queued that
    nothing of them ran, those stuck that they were stopped while worked on (not uvicorn's bare 500
    and a traceback) — and the server (every worker) exits 0."""
    server = start_server(
        tmp_path,
        database_url=postgres_url,
        extra_env={"VIBE_MAX_CALLS_AT_ONCE": "1", "VIBE_SHUTDOWN_GRACE_S": "1"},
        extra_args=["--workers", str(workers)],
    )
    locker = await asyncpg.connect(dsn(postgres_url))
    calls = 8
    try:
        team = await _worker(server, "gate-stopper")
        locked = locker.transaction()
        await locked.start()
        await locker.execute("LOCK TABLE issues IN ACCESS EXCLUSIVE MODE")

        async def create(http: httpx2.AsyncClient, i: int) -> httpx2.Response:
            """Issue `call i`: over MCP for even `i`, over REST for odd."""
            if i % 2:
                rest_headers = {"Authorization": f"Bearer {team}"}
                url = f"{server.url}/api/v1/projects/default/issues"
                return await http.post(url, headers=rest_headers, json={"title": f"call {i}"})
            arguments = {"title": f"call {i}", "agent": "gate-stopper"}
            headers, body = modern_request(
                team,
                "tools/call",
                {"name": "create_issue", "arguments": arguments},
                name="create_issue",
                request_id=i,
            )
            return await http.post(server.mcp_url, headers=headers, json=body)

        async with (
            httpx2.AsyncClient(timeout=30) as http,
            httpx2.AsyncClient(base_url=server.url, timeout=30) as browser,
            asyncio.timeout(30),
        ):
            assert (await browser.post("/login", data={"token": team})).status_code == 303
            board = asyncio.create_task(browser.get("/"))  # a dashboard page: not gated
            while await locker.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") < 1:
                await asyncio.sleep(0.05)  # until its read waits for the lock
            first = asyncio.create_task(create(http, 1))  # a REST call takes the (first) place
            while await asyncio.to_thread(metric, server.url, "vibe_calls_working") < 1:
                await asyncio.sleep(0.05)
            sent = [first, *(asyncio.create_task(create(http, i)) for i in range(calls) if i != 1)]
            while True:  # every call in: stuck behind the lock (one a worker at most) or queued
                working = await asyncio.to_thread(metric, server.url, "vibe_calls_working")
                queued = await asyncio.to_thread(metric, server.url, "vibe_calls_queued")
                if working >= 1 and working + queued == calls:
                    break
                await asyncio.sleep(0.05)
            server.proc.terminate()
            answers = await asyncio.gather(*sent)
            page = await board
            await locked.rollback()
        assert page.status_code == 503 and page.json()["error"]["code"] == "going_away", page.text
        assert "stopped this request while working on it" in page.json()["error"]["message"]
        errors = [answer.json()["error"] for answer in answers]  # JSON-RPC's, or REST's envelope
        order = [1, *(i for i in range(calls) if i != 1)]
        for i, answer, error in zip(order, answers, errors, strict=True):
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert error.get("data", error)["code"] == "going_away", error
            if i % 2 == 0:  # MCP: the answer names the request it answers
                assert answer.json()["id"] == i, answer.text
        never_ran = [e for e in errors if "nothing of it ran" in e["message"]]
        cut_off = [e for e in errors if "stopped this request while working on it" in e["message"]]
        assert (len(never_ran), len(cut_off)) == (queued, working), errors
        assert await asyncio.to_thread(server.proc.wait, 30) == 0
        assert "Exception in ASGI application" not in server.log()  # answered, not failed
        titles = {row["title"] for row in await locker.fetch("SELECT title FROM issues")}
        assert not {f"call {i}" for i in range(calls)} & titles, titles  # the lock held them all
    finally:
        await locker.close()
        server.stop()
