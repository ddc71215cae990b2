"""The live feed against a real server: SSE and WebSocket with resume, filters and scopes, keep-alives,
revocation, waiting for mail over MCP and REST, MCP change notifications, slow consumers, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from mcp.client.subscriptions import ResourceUpdated
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Database

from ..support import ServerProcess, call, call_error, mcp_client, start_server
from .live_support import (
    MODERN_META,
    Frame,
    latest_id,
    listen_request,
    log_after,
    metric,
    next_events,
    parse_sse,
    rest,
    sse_frames,
    token,
    ws_connect,
    ws_events_until,
    ws_url,
)

FAST = {"VIBE_FEED_KEEPALIVE_S": "0.3"}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("feeds"), extra_env=FAST)
    try:
        yield proc
    finally:
        proc.stop()


async def test_sse_resumes_exactly_after_the_last_event_id(live_server: ServerProcess) -> None:
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        await api.post("/projects/default/agents", json={"name": "sse-w"})
        start = await latest_id(api)
        for i in range(3):
            await api.post("/projects/default/issues", json={"title": f"before {i}", "agent": "sse-w"})
        async with api.stream("GET", "/events/stream", params={"after": start}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            first = await next_events(sse_frames(response), 4)
        seen = first[-1].id
        assert seen is not None
        assert [f.id for f in first] == [e["id"] for e in (await log_after(api, start))[:4]]

        for i in range(3):  # written while the subscriber is away
            await api.post("/projects/default/issues", json={"title": f"away {i}", "agent": "sse-w"})
        truth = await log_after(api, seen)
        resume = {"Last-Event-ID": str(seen)}  # wins over `after`
        async with api.stream("GET", "/events/stream", params={"after": 0}, headers=resume) as response:
            frames = sse_frames(response)
            rest_frames = await next_events(frames, len(truth))
            assert [f.id for f in rest_frames] == [e["id"] for e in truth]
            assert [f.event for f in rest_frames] == [e["type"] for e in truth]
            assert [f.json() for f in rest_frames] == truth
            # Idle now: keep-alive comments keep the connection open.
            async for frame in frames:
                if "keep-alive" in frame.comments:
                    break


async def test_sse_filters_scopes_and_refuses_bad_input(live_server: ServerProcess) -> None:
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        await api.post("/projects", json={"slug": "feeds-p2"})
        await api.post("/projects/default/agents", json={"name": "filter-w"})
        await api.post("/projects/feeds-p2/agents", json={"name": "filter-w2"})
        viewer = await token(api, "viewer", project="feeds-p2")
        start = await latest_id(api)
        async with (
            api.stream("GET", "/events/stream", params={"after": start, "types": "issue.claimed"}) as claimed,
            rest(live_server.url, viewer) as scoped,
            scoped.stream("GET", "/events/stream", params={"after": start}) as p2,
        ):
            made = (
                await api.post("/projects/default/issues", json={"title": "x", "agent": "filter-w"})
            ).json()
            await api.post(f"/projects/default/issues/{made['id']}/claim", json={"agent": "filter-w"})
            await api.post("/projects/feeds-p2/issues", json={"title": "y", "agent": "filter-w2"})
            [only] = await next_events(sse_frames(claimed), 1)
            assert (only.event, only.json()["payload"]["id"]) == ("issue.claimed", made["id"])
            frames = await next_events(sse_frames(p2), 2)
            assert [(f.event, f.json()["project"]) for f in frames] == [
                ("issue.created", "feeds-p2"),
                ("issue.ready", "feeds-p2"),
            ]
            other = await scoped.get("/events/stream", params={"project": "default"})
            assert other.status_code == 403
        bad_type = await api.get("/events/stream", params={"types": "Issue Created"})
        assert bad_type.status_code == 422
        assert bad_type.json()["error"]["details"]["field"] == "types"
        # A well-shaped type the catalogue does not have (a typo) is refused too, on the stream and the
        # page: filtered on it, a live feed would match nothing and wait for ever, never told.
        for path in ("/events/stream", "/events"):
            for typo, near in (("isue.*", "issue.*"), ("issue.creatd", "issue.created")):
                unknown = await api.get(path, params={"types": typo})
                assert unknown.status_code == 422, (path, typo)
                details = unknown.json()["error"]["details"]
                assert details["field"] == "types" and f"did you mean {near}?" in details["rule"], details
        for bad in ("yesterday", "-1", "1.5", "9" * 25):
            bad_id = await api.get("/events/stream", headers={"Last-Event-ID": bad})
            assert bad_id.status_code == 422
            assert bad_id.json()["error"]["details"]["field"] == "Last-Event-ID"
        too_far = await api.get("/events/stream", params={"after": 2**63})
        assert too_far.status_code == 422
        assert too_far.json()["error"]["details"]["errors"][0]["field"] == "after"
        # One id bound (rules.MAX_ID) for the page and the stream: the same `after` is refused by both.
        for path in ("/events", "/events/stream"):
            beyond = await api.get(path, params={"after": MAX_ID + 1})
            assert beyond.status_code == 422, path
            assert beyond.json()["error"]["details"]["errors"][0]["field"] == "after", path
        newest = await latest_id(api)
        assert (await api.get("/events", params={"after": newest})).json()["items"] == []  # caught up
        beyond_header = await api.get("/events/stream", headers={"Last-Event-ID": str(MAX_ID + 1)})
        assert beyond_header.json()["error"]["details"]["field"] == "Last-Event-ID"
        # a cursor past the newest event (another server's database) heard nothing, silently, until
        # ids passed it: refused, naming the newest
        for path, query, headers, field in (
            ("/events/stream", {"after": 10**12}, {}, "after"),
            ("/events/stream", {}, {"Last-Event-ID": str(10**12)}, "Last-Event-ID"),
            ("/events", {"after": MAX_ID}, {}, "after"),  # the page, as the stream: not an empty page
        ):
            past = await api.get(path, params=query, headers=headers)
            assert past.status_code == 422, past.text
            assert past.json()["error"]["details"]["field"] == field
            assert re.search(r"is past the newest event \(\d+\)", past.json()["error"]["message"])
        async with rest(live_server.url, "vibe_" + "x" * 40) as stranger:
            assert (await stranger.get("/events/stream")).status_code == 401


async def test_websocket_feed_auth_ping_and_resume(live_server: ServerProcess) -> None:
    admin = live_server.admin_token
    async with rest(live_server.url, admin) as api, asyncio.timeout(20):
        await api.post("/projects/default/agents", json={"name": "ws-w"})
        start = await latest_id(api)
        async with ws_connect(live_server.url, admin, after=start) as ws:
            assert json.loads(await ws.recv()) == {"type": "ready", "last_id": start}
            for i in range(3):
                await api.post("/projects/default/issues", json={"title": f"ws {i}", "agent": "ws-w"})
            latest = await latest_id(api)
            got = await ws_events_until(ws, latest)
            assert [e["id"] for e in got] == [e["id"] for e in await log_after(api, start)]
            await ws.send(json.dumps({"type": "ping"}))
            while (message := json.loads(await ws.recv()))["type"] != "pong":
                assert message["type"] == "ping"  # server keep-alives may come first
            assert message == {"type": "pong", "last_id": latest}
        seen = got[0]["id"]

        # No header: the first message authenticates; resume after an id.
        async with connect(ws_url(live_server.url, after=seen), open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "auth", "token": admin}))
            assert json.loads(await ws.recv()) == {"type": "ready", "last_id": seen}
            assert [e["id"] for e in await ws_events_until(ws, latest)] == [e["id"] for e in got[1:]]

        # a socket that never authenticates is closed, not held
        async with connect(ws_url(live_server.url), open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as idle:
                async with asyncio.timeout(10):
                    await ws.recv()
            assert idle.value.rcvd is not None and idle.value.rcvd.code == 4401

        # a flood of pings gets one pong per second, not one each
        async with ws_connect(live_server.url, admin) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            flood = time.monotonic()
            for _ in range(50):
                await ws.send(json.dumps({"type": "ping"}))
            await ws.send(json.dumps({"type": "auth", "token": "ignored"}))  # not a ping: no answer
            pongs = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    while True:
                        pongs += json.loads(await ws.recv())["type"] == "pong"
            assert 1 <= pongs <= int(time.monotonic() - flood) + 1  # one per second at most

        for query, auth, code, words in [
            ({}, "vibe_" + "x" * 40, 4401, "unauthenticated"),
            ({}, "not json at all", 4401, "first message"),
            ({"types": "Bad Type"}, admin, 4400, "types"),
            ({"after": "-3"}, admin, 4400, "after"),
            ({"after": "9" * 25}, admin, 4400, "after"),
            ({"after": str(10**12)}, admin, 4400, "is past the newest event"),
        ]:
            async with connect(ws_url(live_server.url, **query), open_timeout=10) as ws:
                await ws.send(
                    json.dumps({"type": "auth", "token": auth}) if auth.startswith("vibe_") else auth
                )
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == code
                assert words in closed.value.rcvd.reason


async def test_a_revoked_token_stops_its_feeds(live_server: ServerProcess) -> None:
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        created = (await api.post("/tokens", json={"role": "viewer", "label": "short-lived"})).json()
        async with (
            rest(live_server.url, created["token"]) as viewer,
            viewer.stream("GET", "/events/stream") as stream,
            ws_connect(live_server.url, created["token"]) as ws,
        ):
            assert json.loads(await ws.recv())["type"] == "ready"
            assert (await api.delete(f"/tokens/{created['id']}")).status_code == 200
            frames = [f async for f in sse_frames(stream)]  # the stream ends
            assert frames[-1].event == "error"
            assert frames[-1].json()["code"] == "unauthenticated"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_revoked_token_stops_its_feeds_while_events_keep_coming(live_server: ServerProcess) -> None:
    """The credential is read again at least once a keep-alive interval even when events arrive more
    often than that: the feeds of a busy project checked it on quiet spells only, so a revoked token
    (or a session ended by a logout) went on hearing every change for as long as the project was busy."""
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        await api.post("/projects/default/agents", json={"name": "busy-w"})
        created = (await api.post("/tokens", json={"role": "viewer", "label": "busy-viewer"})).json()

        async def busy() -> None:  # an event every 0.05 s, the keep-alive is 0.3 s
            for i in range(10_000):
                await api.post("/projects/default/issues", json={"title": f"busy {i}", "agent": "busy-w"})
                await asyncio.sleep(0.05)

        writer = asyncio.create_task(busy())
        try:
            async with (
                rest(live_server.url, created["token"]) as viewer,
                viewer.stream("GET", "/events/stream", params={"types": "issue.created"}) as stream,
                ws_connect(live_server.url, created["token"], types="issue.created") as ws,
            ):
                frames = sse_frames(stream)
                await next_events(frames, 1)
                while json.loads(await ws.recv())["type"] != "event":
                    pass
                assert (await api.delete(f"/tokens/{created['id']}")).status_code == 200
                rest_frames = [f async for f in frames]  # the stream ends, events or not
                assert rest_frames[-1].event == "error"
                assert rest_frames[-1].json()["code"] == "unauthenticated"
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


async def _logged_in(browser: httpx2.AsyncClient, token: str) -> str:
    """Log `browser` in to the dashboard with `token`; the page's CSRF token (for the logout form)."""
    assert (await browser.post("/login", data={"token": token})).status_code == 303
    page = (await browser.get("/")).text
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_a_logout_ends_the_sessions_open_event_stream(live_server: ServerProcess) -> None:
    """The dashboard's event stream, opened with the session cookie, ends at the next keep-alive
    after the session is logged out, saying so: a copy of the cookie has nothing left open."""
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        created = (await api.post("/tokens", json={"role": "viewer", "label": "a person"})).json()
        async with httpx2.AsyncClient(base_url=live_server.url, timeout=10) as browser:
            csrf = await _logged_in(browser, created["token"])
            async with browser.stream("GET", "/api/v1/events/stream") as stream:
                assert stream.status_code == 200
                frames = sse_frames(stream)
                logged_out = await browser.post("/logout", data={"csrf": csrf})
                assert logged_out.status_code == 303 and logged_out.headers["location"] == "/login"
                ended = [f async for f in frames]
            assert ended[-1].event == "error", ended
            assert ended[-1].json()["code"] == "unauthenticated"
            assert "logged out" in ended[-1].json()["message"]


async def test_the_dashboards_session_follows_the_log_over_a_websocket_from_its_own_site_only(
    live_server: ServerProcess,
) -> None:
    """A dashboard page follows the log over a WebSocket with its session cookie (a browser's six
    HTTP/1.1 connections to a host are not spent on it). A socket another site's page opens is
    refused before anything is read, and a logout ends the open socket as it ends the stream."""
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(30):
        created = (await api.post("/tokens", json={"role": "viewer", "label": "a person"})).json()
        async with httpx2.AsyncClient(base_url=live_server.url, timeout=10) as browser:
            csrf = await _logged_in(browser, created["token"])
            cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
            host = live_server.url.removeprefix("http://")

            def socket(origin: str) -> Any:
                headers = {"Cookie": cookie, "Origin": origin}
                return connect(ws_url(live_server.url), additional_headers=headers, open_timeout=10)

            async with socket(f"http://evil.example:{host.rpartition(':')[2]}") as ws:
                with pytest.raises(ConnectionClosed) as refused:
                    await ws.recv()
            assert refused.value.rcvd is not None and refused.value.rcvd.code == 4403
            assert "from this site" in refused.value.rcvd.reason

            async with socket(f"http://{host}") as ws:
                ready = json.loads(await ws.recv())
                assert ready["type"] == "ready"
                issue = (
                    await api.post("/projects/default/issues", json={"title": "Seen by the page"})
                ).json()
                got = await ws_events_until(ws, ready["last_id"] + 1)
                assert got[-1]["type"] == "issue.created" and got[-1]["payload"]["id"] == issue["id"]
                logged_out = await browser.post("/logout", data={"csrf": csrf})
                assert logged_out.status_code == 303
                with pytest.raises(ConnectionClosed) as ended:
                    while True:
                        await ws.recv()
            assert ended.value.rcvd is not None and ended.value.rcvd.code == 4401
            assert "logged out" in ended.value.rcvd.reason

            async with socket(f"http://{host}") as ws:  # the same cookie, after the logout
                with pytest.raises(ConnectionClosed) as after:
                    await ws.recv()
            assert after.value.rcvd is not None and after.value.rcvd.code == 4401


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # nested past any JSON parser's depth, < 1 MiB


async def test_a_websocket_message_nested_past_the_parsers_depth_is_ignored(
    live_server: ServerProcess,
) -> None:
    """Deeply nested JSON from a WebSocket client is a message that is not JSON: as the first message,
    a 4401 refusal; on an authenticated socket, ignored (pings still answered). It raised
    RecursionError, which ended the socket without a close frame and logged a traceback."""
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        viewer = await token(api, "viewer")
        async with ws_connect(live_server.url, None) as ws:
            await ws.send(DEEP_JSON)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with ws_connect(live_server.url, viewer) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(DEEP_JSON)
            await ws.send(json.dumps({"type": "ping"}))
            while (message := json.loads(await ws.recv()))["type"] != "pong":
                assert message["type"] in ("ping", "event"), message
    assert "RecursionError" not in live_server.log()


async def test_a_revoked_token_ends_its_mcp_listen_stream(live_server: ServerProcess) -> None:
    """`subscriptions/listen` is a live feed too: revoked, its stream ends within a keep-alive with
    `[unauthenticated]` (it stayed open, pinging and hearing changes, for as long as the client held it)."""
    async with rest(live_server.url, live_server.admin_token) as api, asyncio.timeout(20):
        created = (await api.post("/tokens", json={"role": "viewer", "label": "listener"})).json()
        headers, listen = listen_request(created["token"], request_id=7)
        async with (
            httpx2.AsyncClient(timeout=20) as client,
            client.stream("POST", live_server.mcp_url, headers=headers, json=listen) as stream,
        ):
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    assert "subscriptions/acknowledged" in line
                    break
            assert (await api.delete(f"/tokens/{created['id']}")).status_code == 200
            data = [line async for line in lines if line.startswith("data:")]  # the stream ends
        ended = json.loads(data[-1].removeprefix("data:"))
        assert ended["id"] == 7 and ended["error"]["data"] == {"code": "unauthenticated"}
        assert ended["error"]["message"].startswith("[unauthenticated] the token was revoked")


async def test_a_refused_mcp_listen_is_answered_with_its_own_error(live_server: ServerProcess) -> None:
    """A `subscriptions/listen` the server refuses (bad params on 2026-07-28; the method itself on
    an older protocol) gets its own error, not an internal one with a traceback in the log (the
    refusal came out of the stream's task group as an exception group)."""
    headers, _ = listen_request(live_server.admin_token)
    old = {**headers, "MCP-Protocol-Version": "2025-11-25"}
    del old["Mcp-Method"]
    refused = [
        (headers, {"_meta": MODERN_META}, -32602, "notifications"),
        (headers, {"notifications": "x", "_meta": MODERN_META}, -32602, "notifications"),
        (old, {}, -32601, "Method not found"),
    ]
    async with httpx2.AsyncClient(timeout=20) as client:
        for sent, params, code, named in refused:
            body = {"jsonrpc": "2.0", "id": 3, "method": "subscriptions/listen", "params": params}
            answer = await client.post(live_server.mcp_url, headers=sent, json=body)
            text = answer.text
            error = json.loads(text[text.index("{") :].splitlines()[0])["error"]
            assert (error["code"], named in error["message"]) == (code, True), error
    log = live_server.log()
    assert "Traceback" not in log and "TaskGroup" not in log


async def _held_waits(url: str, count: float) -> None:
    while metric(url, "vibe_mail_waiters") < count:
        await asyncio.sleep(0.02)


async def test_a_token_revoked_while_its_wait_is_held_never_gets_the_mail(live_server: ServerProcess) -> None:
    """A held `wait_for_messages` (MCP) or `inbox/wait` (REST) whose token is revoked meanwhile ends
    with `unauthenticated` when mail wakes it: the mail sent after the revocation is not handed over
    (over REST it was, for as long as the wait's 60 s)."""
    url = live_server.url
    async with rest(url, live_server.admin_token) as api, asyncio.timeout(30):
        sender = await token(api, "worker", project="default", agent="rv-sender")
        async with rest(url, sender) as send:
            await send.post("/projects/default/agents", json={"name": "rv-sender"})
            for name in ("rv-mcp", "rv-rest"):
                bound = {"role": "worker", "project": "default", "agent": name}
                made = (await api.post("/tokens", json=bound)).json()
                async with rest(url, made["token"]) as own:
                    await own.post("/projects/default/agents", json={"name": name})
                    before = metric(url, "vibe_mail_waiters")
                    late = {"to": [name], "subject": "late", "body": "AFTER REVOCATION"}
                    if name == "rv-mcp":
                        async with mcp_client(live_server.mcp_url, made["token"]) as client:
                            waiting: asyncio.Task[Any] = asyncio.create_task(
                                call_error(client, "wait_for_messages", timeout_s=20)
                            )
                            await _held_waits(url, before + 1)
                            assert (await api.delete(f"/tokens/{made['id']}")).status_code == 200
                            sent = await send.post("/projects/default/messages", json=late)
                            assert sent.status_code == 201, sent.text
                            error = await waiting
                        assert "[unauthenticated] the token was revoked" in error, error
                        assert "AFTER REVOCATION" not in error
                    else:
                        path = f"/projects/default/agents/{name}/inbox/wait"
                        waiting = asyncio.create_task(own.get(path, params={"timeout_s": 20}))
                        await _held_waits(url, before + 1)
                        assert (await api.delete(f"/tokens/{made['id']}")).status_code == 200
                        sent = await send.post("/projects/default/messages", json=late)
                        assert sent.status_code == 201, sent.text
                        answer = await waiting
                        assert answer.status_code == 401, answer.text
                        assert answer.json()["error"]["code"] == "unauthenticated"
                        assert "AFTER REVOCATION" not in answer.text


async def test_wait_for_messages_over_mcp_and_rest(live_server: ServerProcess) -> None:
    url = live_server.url
    async with rest(url, live_server.admin_token) as api, asyncio.timeout(30):
        ann_token = await token(api, "worker", project="default", agent="mail-ann")
        bob_token = await token(api, "worker", project="default", agent="mail-bob")
        async with mcp_client(live_server.mcp_url, bob_token) as bob, rest(url, ann_token) as ann:
            await call(bob, "register_agent", name="mail-bob")
            await ann.post("/projects/default/agents", json={"name": "mail-ann"})
            waiting = asyncio.create_task(call(bob, "wait_for_messages", timeout_s=20))
            while metric(url, "vibe_mail_waiters") < 1:
                await asyncio.sleep(0.02)
            sent = await ann.post(
                "/projects/default/messages", json={"to": ["mail-bob"], "subject": "hi", "body": "b"}
            )
            sent_at = time.monotonic()
            inbox = await waiting
            assert time.monotonic() - sent_at < 1
            assert [i["message"]["id"] for i in inbox["items"]] == [sent.json()["id"]]
            assert inbox["items"][0]["message"]["sender"] == "mail-ann"

            message_id = sent.json()["id"]
            started = time.monotonic()
            empty = await call(bob, "wait_for_messages", timeout_s=0.3, since_id=message_id)
            assert empty["items"] == [] and time.monotonic() - started >= 0.3
            error = await call_error(bob, "wait_for_messages", timeout_s=61)
            assert "timeout_s" in error and "60" in error
            assert "mail-ann" in await call_error(bob, "wait_for_messages", agent="mail-ann", timeout_s=1)

        async with rest(url, bob_token) as bob_rest:
            path = "/projects/default/agents/mail-bob/inbox/wait"
            got = await bob_rest.get(path, params={"timeout_s": 5, "mark_read": "true"})
            assert [i["message"]["id"] for i in got.json()["items"]] == [message_id]
            assert got.json()["unread"] == 0
            late = await bob_rest.get(path, params={"timeout_s": 0.2})
            assert late.status_code == 200 and late.json()["items"] == []
            refused = await bob_rest.get(path, params={"timeout_s": 61})
            assert refused.status_code == 422
            assert refused.json()["error"]["details"]["errors"][0]["field"] == "timeout_s"


async def test_mcp_clients_hear_resource_changes(live_server: ServerProcess) -> None:
    admin = live_server.admin_token
    async with rest(live_server.url, admin) as api, asyncio.timeout(20):
        await api.post("/projects/default/agents", json={"name": "res-w"})
        issue = (
            await api.post("/projects/default/issues", json={"title": "watched", "agent": "res-w"})
        ).json()
        uri = f"vibe://projects/default/issues/{issue['id']}"
        async with (
            mcp_client(live_server.mcp_url, admin) as client,
            client.listen(resource_subscriptions=[uri]) as subscription,
        ):
            await api.post("/projects/default/issues", json={"title": "unrelated", "agent": "res-w"})
            await api.post(
                f"/projects/default/issues/{issue['id']}/comments", json={"body": "hm", "agent": "res-w"}
            )
            change = await anext(subscription)
            assert change == ResourceUpdated(uri=uri)


async def test_a_subscriber_that_stops_reading_is_cut_off_and_resumes(
    postgres_url: str, tmp_path: Path
) -> None:
    """Big events (as a bulk import might write) overrun the kernel's buffers of a client that does not
    read: it is cut off with the reason, a healthy subscriber gets everything, and the cut-off one
    resumes from its last id without a gap."""
    server = start_server(tmp_path, database_url=postgres_url, extra_env={"VIBE_FEED_SEND_TIMEOUT_S": "0.5"})
    admin = server.admin_token
    try:
        async with rest(server.url, admin) as api, asyncio.timeout(60):
            start = await latest_id(api)
            slow_sse = _raw_sse(server.url, admin, start)
            slow_ws_socket = _small_socket(server.url)
            async with (
                connect(
                    ws_url(server.url, after=start),
                    sock=slow_ws_socket,
                    max_queue=1,
                    compression=None,  # no permessage-deflate: the blobs would shrink to nothing
                    additional_headers={"Authorization": f"Bearer {admin}"},
                ) as slow_ws,
                api.stream("GET", "/events/stream", params={"after": start}) as healthy,
            ):
                assert json.loads(await slow_ws.recv())["type"] == "ready"
                # The healthy subscriber reads from before the events are written: one that waited for
                # the write to end could itself stall past the send timeout on a loaded machine.
                reading = asyncio.create_task(next_events(sse_frames(healthy), 120))
                await _bulk_events(postgres_url, count=120, size=64_000)
                latest = await latest_id(api)
                got = await reading
                assert [f.id for f in got] == list(range(start + 1, latest + 1))
                while (
                    metric(server.url, "vibe_feed_disconnects_total", transport="sse", reason="slow_consumer")
                    < 1
                ):
                    await asyncio.sleep(0.05)
                while (
                    metric(server.url, "vibe_feed_disconnects_total", transport="ws", reason="slow_consumer")
                    < 1
                ):
                    await asyncio.sleep(0.05)

                # The SSE client reads again: a whole prefix, then the reason, then the end.
                frames = await asyncio.to_thread(_read_to_end, slow_sse)
                ids = [f.id for f in frames if f.id is not None]
                assert ids == list(range(start + 1, start + 1 + len(ids))) and len(ids) < 120
                assert frames[-1].event == "error"
                assert frames[-1].json()["code"] == "slow_consumer"
                assert frames[-1].json()["last_id"] == (ids[-1] if ids else start)
                resume = {"Last-Event-ID": str(frames[-1].json()["last_id"])}
                async with api.stream("GET", "/events/stream", headers=resume) as again:
                    rest_frames = await next_events(sse_frames(again), latest - frames[-1].json()["last_id"])
                assert [f.id for f in rest_frames] == list(
                    range(frames[-1].json()["last_id"] + 1, latest + 1)
                )

                # The WebSocket client: a prefix, then close 4408 with the reason.
                ws_ids: list[int] = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        message = json.loads(await slow_ws.recv())
                        if message["type"] == "event":
                            ws_ids.append(message["event"]["id"])
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
                assert "slow consumer" in closed.value.rcvd.reason
                assert ws_ids == list(range(start + 1, start + 1 + len(ws_ids))) and len(ws_ids) < 120
                async with ws_connect(server.url, admin, after=ws_ids[-1] if ws_ids else start) as ws:
                    assert json.loads(await ws.recv())["type"] == "ready"
                    resumed = await ws_events_until(ws, latest)
                assert [e["id"] for e in resumed] == list(
                    range((ws_ids[-1] if ws_ids else start) + 1, latest + 1)
                )
    finally:
        server.stop()


def _small_socket(url: str) -> socket.socket:
    """A connected socket with a tiny receive buffer, so a client that stops reading stalls the sender."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    return sock


def _raw_sse(url: str, token: str, after: int) -> socket.socket:
    """An SSE request on a raw socket that then reads nothing (HTTP/1.0: the body ends at the close)."""
    sock = _small_socket(url)
    request = (
        f"GET /api/v1/events/stream?after={after} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def _read_to_end(sock: socket.socket) -> list[Frame]:
    sock.settimeout(20)
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    sock.close()
    _, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return parse_sse(body.decode())


async def _bulk_events(database_url: str, *, count: int, size: int) -> None:
    """Append big events straight to the log, in one transaction (PostgreSQL tells every replica)."""
    db = Database(database_url)
    try:
        async with db.write() as conn:
            now = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
            batch = [
                event_store.NewEvent("test.bulk", "bulk", {"n": i, "blob": "x" * size}, None)
                for i in range(count)
            ]
            await event_store.append(conn, now, batch)
    finally:
        await db.dispose()


async def test_shutdown_ends_open_streams_and_waits_promptly(tmp_path: Path) -> None:
    """SIGTERM ends every open stream, each saying why — SSE, WebSocket, MCP's listen — and wakes
    the held waits; the server then stops at once, not at the end of its grace."""
    # No drain before stopping (docs/live.md: the drain is tested on its own): this measures the stop.
    # A long grace: were any stream left open, the stop would wait all of it, well past the bound below.
    grace = 30
    server = start_server(
        tmp_path, extra_env={**FAST, "VIBE_SHUTDOWN_DRAIN_S": "0", "VIBE_SHUTDOWN_GRACE_S": str(grace)}
    )
    admin = server.admin_token
    headers, listen = listen_request(admin, request_id=9)
    async with rest(server.url, admin) as api, asyncio.timeout(60):
        await api.post("/projects/default/agents", json={"name": "late"})
        async with (
            api.stream("GET", "/events/stream") as stream,
            ws_connect(server.url, admin) as ws,
            httpx2.AsyncClient(timeout=60) as mcp,
            mcp.stream("POST", server.mcp_url, headers=headers, json=listen) as listening,
        ):
            assert json.loads(await ws.recv())["type"] == "ready"
            lines = listening.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    assert "subscriptions/acknowledged" in line
                    break
            waiting = asyncio.create_task(
                api.get("/projects/default/agents/late/inbox/wait", params={"timeout_s": 30})
            )
            while metric(server.url, "vibe_mail_waiters") < 1:
                await asyncio.sleep(0.02)
            asked = time.monotonic()
            server.proc.terminate()
            frames = [f async for f in sse_frames(stream)]
            assert frames[-1].event == "error" and frames[-1].json()["code"] == "going_away"
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            # 1001 (going away) from our feed: the server waits for its feeds before uvicorn closes the
            # rest (which would say 1012).
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            answer = await waiting
            assert answer.status_code == 200 and answer.json()["items"] == []
            # The MCP listen stream ends too, saying why (it was held to the end of the grace, then
            # cut off mid-stream with a traceback in the log).
            data = [line async for line in lines if line.startswith("data:")]
            ended = json.loads(data[-1].removeprefix("data:"))
            assert ended["id"] == 9 and ended["error"]["data"] == {"code": "going_away"}, ended
            assert await asyncio.to_thread(server.proc.wait, grace) == 0
            assert time.monotonic() - asked < grace / 2
    assert "Exception in ASGI application" not in server.log()


async def test_a_scoped_token_hears_no_changes_of_another_project(live_server: ServerProcess) -> None:
    admin = live_server.admin_token
    async with rest(live_server.url, admin) as api, asyncio.timeout(20):
        await api.post("/projects", json={"slug": "listen-other"})
        scoped = (await api.post("/tokens", json={"role": "worker", "project": "listen-other"})).json()[
            "token"
        ]
        for project in ("default", "listen-other"):
            await api.post(f"/projects/{project}/agents", json={"name": "listen-w"})
        theirs = (
            await api.post("/projects/default/issues", json={"title": "not yours", "agent": "listen-w"})
        ).json()
        mine = (
            await api.post("/projects/listen-other/issues", json={"title": "yours", "agent": "listen-w"})
        ).json()
        their_uri = f"vibe://projects/default/issues/{theirs['id']}"
        my_uri = f"vibe://projects/listen-other/issues/{mine['id']}"
        async with (
            mcp_client(live_server.mcp_url, scoped) as client,
            client.listen(resource_subscriptions=[their_uri, my_uri]) as subscription,
        ):
            # The other project's change commits first: were it delivered, it would arrive first.
            await api.post(
                f"/projects/default/issues/{theirs['id']}/comments", json={"body": "x", "agent": "listen-w"}
            )
            await api.post(
                f"/projects/listen-other/issues/{mine['id']}/comments",
                json={"body": "y", "agent": "listen-w"},
            )
            assert await anext(subscription) == ResourceUpdated(uri=my_uri)
