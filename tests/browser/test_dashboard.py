"""The dashboard in a real browser: login, the board, live updates, steering, and its defences."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from playwright.sync_api import BrowserContext, Dialog, Locator, Page, expect
from websockets.asyncio.client import connect

from ..support import ServerProcess, call, mcp_client
from .scenario import Api, populate

pytestmark = pytest.mark.browser

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run async client code beside Playwright's own loop (in a thread of its own)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def login(page: Page, token: str) -> None:
    page.goto("/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("#agents-title")).to_be_visible()


def wait_live(page: Page) -> None:
    expect(page.locator("#live-status")).to_have_text("live")


def csrf_of(page: Page) -> str:
    value = page.locator("form.logout input[name=csrf]").get_attribute("value")
    assert value
    return value


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Api:
    return Api(server.url, server.admin_token)


@pytest.fixture(scope="module")
def world(api: Api) -> Api:
    populate(api)
    return api


def test_login_refuses_a_bad_token_and_a_good_one_lands_on_the_board(page: Page, world: Api) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#token", "vibe_not-a-real-token-at-all-0000000000000")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("That token is invalid, expired or revoked.")
    expect(page).to_have_url(re.compile(r"/login$"))

    _, token = world.token("viewer", "lena")
    login(page, token)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".who")).to_contain_text("token:lena")
    cookie = next(c for c in page.context.cookies() if c["name"] == "vibe_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "vibe_" not in cookie["value"] and token not in cookie["value"]


def test_the_board_shows_agents_issues_leases_and_events(
    page: Page, server: ServerProcess, world: Api
) -> None:
    login(page, server.admin_token)
    brook = page.locator("tr[data-agent=brook]")
    expect(brook).to_contain_text("worker")
    expect(brook).to_contain_text("working")
    expect(brook).to_contain_text("Moving sessions into middleware")

    def column(key: str) -> Locator:
        return page.locator(f"[data-column={key}]")

    expect(column("in_progress")).to_contain_text("Session middleware")
    expect(column("in_progress")).to_contain_text("brook")
    expect(column("review")).to_contain_text("Login form validation")
    expect(column("blocked")).to_contain_text("Rate-limit failed logins")
    expect(column("ready")).to_contain_text("Document the /auth endpoints")
    expect(column("done")).to_contain_text("Extract the token parser")
    expect(page.locator("section.leases")).to_contain_text("src/auth/**")
    # the issue brook's lease serves (the scenario names #2), linked
    expect(page.locator("section.leases .issue a[href='/issues/2?project=default']")).to_have_text("#2")
    expect(page.locator("section.events")).to_contain_text("message.sent")

    page.get_by_role("link", name="#2 Session middleware").click()
    expect(page.locator("article.issue h1")).to_have_text("#2 Session middleware")
    expect(page.locator("section.comments")).to_contain_text("Cookie handling is done; CSRF next.")
    expect(page.get_by_role("link", name="#4 Rate-limit failed logins")).to_be_visible()  # a dependant

    page.get_by_role("link", name="Mail").click()
    expect(page.locator("table.mail")).to_contain_text("Rebase on main before review")


def test_changes_over_rest_and_mcp_appear_live_without_a_reload(
    page: Page, server: ServerProcess, world: Api
) -> None:
    login(page, server.admin_token)
    wait_live(page)
    page.evaluate("window.__still_here = true")
    ready = page.locator("[data-column=ready]")
    in_progress = page.locator("[data-column=in_progress]")

    issue_id = world.issue("Live from REST", priority="p1")
    expect(ready).to_contain_text("Live from REST")

    async def claim() -> None:
        async with mcp_client(server.mcp_url, server.admin_token) as client:
            await call(client, "claim_issue", id=issue_id, agent="ada")

    run(claim())
    expect(in_progress).to_contain_text("Live from REST")
    expect(ready).not_to_contain_text("Live from REST")
    world.call("POST", f"{world.p}/agents/cyd/heartbeat", {"status": "blocked", "activity": "Needs a DB"})
    expect(page.locator("tr[data-agent=cyd]")).to_contain_text("blocked")
    # A new activity line alone (the status unchanged) shows too, without another event's help.
    world.call("POST", f"{world.p}/agents/cyd/heartbeat", {"activity": "Waiting for the DBA"})
    expect(page.locator("tr[data-agent=cyd] .activity")).to_have_text("Waiting for the DBA")
    assert page.evaluate("window.__still_here") is True  # the same page: updated, not reloaded


def test_an_overseer_message_reaches_the_inbox_and_the_audit_log(
    page: Page, server: ServerProcess, world: Api
) -> None:
    login(page, server.admin_token)
    page.select_option("#msg-to", "agent:cyd")
    page.select_option("#msg-importance", "urgent")
    page.fill("#msg-subject", "Stop and rebase")
    page.fill("#msg-body", "main moved under you.")
    page.get_by_role("button", name=re.compile("^Send as")).click()
    expect(page.locator(".notice")).to_have_text("Message sent.")

    inbox = world.call("GET", f"{world.p}/agents/cyd/inbox")["items"]
    message = next(i["message"] for i in inbox if i["message"]["subject"] == "Stop and rebase")
    assert message["sender"] == "token:bootstrap admin"
    assert (message["body"], message["importance"]) == ("main moved under you.", "urgent")
    audit = world.call("GET", "/audit?action=message.overseer")["items"]
    entry = next(a for a in audit if a["details"]["message_id"] == message["id"])
    assert entry["actor"] == "token:bootstrap admin"
    assert entry["details"]["recipients"] == ["cyd"] and entry["details"]["subject"] == "Stop and rebase"

    page.fill("#msg-subject", "")  # the browser's own check is bypassed: the server names the rule
    page.evaluate("document.querySelector('.message-form').noValidate = true")
    page.select_option("#msg-to", "role:worker")
    page.get_by_role("button", name=re.compile("^Send as")).click()
    expect(page.locator(".message-form .error")).to_have_text("subject: must not be empty")


def test_a_coordinator_retires_an_agent(page: Page, world: Api) -> None:
    world.agent("temp", "worker", "idle", "about to go")
    _, token = world.token("coordinator", "cora")
    login(page, token)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-agent=temp]").get_by_role("button", name="Retire").click()
    expect(page.locator(".notice")).to_have_text("Agent retired.")
    expect(page.locator("tr[data-agent=temp]")).to_have_count(0)
    audit = world.call("GET", "/audit?action=agent.retired")["items"]
    assert any(a["actor"] == "token:cora" and a["details"]["agent"] == "temp" for a in audit)


def test_a_viewer_gets_no_steering_and_is_refused(page: Page, world: Api) -> None:
    _, token = world.token("viewer", "vic")
    login(page, token)
    expect(page.locator(".message-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Retire")).to_have_count(0)
    form: dict[str, str | float | bool] = {
        "csrf": csrf_of(page),
        "project": "default",
        "to": "all",
        "subject": "hi",
        "body": "x",
    }
    response = page.request.post("/messages", form=form, max_redirects=0)
    assert response.status == 403
    assert "may not do message.send" in response.text()
    response = page.request.post("/agents/ada/retire", form=form, max_redirects=0)
    assert response.status == 403
    denied = world.call("GET", "/audit?action=access.denied&actor=token:vic")["items"]
    assert {d["details"]["operation"] for d in denied} >= {"message.send", "agent.retire"}


def test_a_form_without_its_csrf_token_is_refused(page: Page, server: ServerProcess, world: Api) -> None:
    login(page, server.admin_token)
    form: dict[str, str | float | bool] = {"project": "default", "to": "agent:ada", "subject": "forged"}
    for extra in ({}, {"csrf": "not-the-token"}):
        response = page.request.post("/messages", form={**form, **extra}, max_redirects=0)
        assert response.status == 403
        assert "CSRF" in response.text()
    foreign = page.request.post(
        "/messages", form={**form, "csrf": csrf_of(page)}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    inbox = world.call("GET", f"{world.p}/agents/ada/inbox")["items"]
    assert all(i["message"]["subject"] != "forged" for i in inbox)


def test_agent_content_is_shown_as_text_and_never_runs(page: Page, server: ServerProcess, world: Api) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    issue_id = world.issue(XSS, body=XSS, labels=["x"])
    world.call("POST", f"{world.p}/agents/ada/heartbeat", {"activity": XSS})
    login(page, server.admin_token)
    wait_live(page)
    expect(page.locator("[data-column=ready]").get_by_text(XSS, exact=True)).to_be_visible()
    expect(page.locator("tr[data-agent=ada] .activity")).to_have_text(XSS)

    world.issue("live " + XSS)  # swapped in by the script while the page is open
    expect(page.locator("[data-column=ready]").get_by_text("live " + XSS, exact=True)).to_be_visible()
    page.goto(f"/issues/{issue_id}")
    expect(page.locator("article.issue h1 .title")).to_have_text(XSS)
    expect(page.locator("article.issue .body")).to_have_text(XSS)
    page.get_by_role("link", name="Mail").click()
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


def test_logout_ends_the_session(
    page: Page, context: BrowserContext, server: ServerProcess, world: Api
) -> None:
    login(page, server.admin_token)
    copied = {c["name"]: c["value"] for c in context.cookies()}  # as a thief would, before the logout
    with httpx2.Client(base_url=server.url, cookies=copied) as thief:
        assert thief.get("/fragments/board").status_code == 200
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login$"))
        assert page.request.get("/fragments/board").status == 401
        # The copy is refused too: the server wrote the session down as ended, not just the cookie off.
        assert thief.get("/fragments/board").status_code == 401
        assert thief.get("/", follow_redirects=False).headers["location"] == "/login"
    ended = world.call("GET", "/audit?action=session.ended")["items"]
    assert ended and ended[0]["outcome"] == "ok"


def test_revoking_the_token_ends_its_session_at_once(page: Page, context: BrowserContext, world: Api) -> None:
    token_id, token = world.token("worker", "wanda")
    login(page, token)
    wait_live(page)
    world.call("DELETE", f"/tokens/{token_id}")
    world.issue("After the revocation")  # the open page looks again, is refused, and goes to log in
    expect(page).to_have_url(re.compile(r"/login$"))
    other = context.new_page()
    other.goto("/")
    expect(other).to_have_url(re.compile(r"/login$"))


def test_eight_boards_in_one_browser_stay_live_and_leave_room_for_other_pages(
    context: BrowserContext, server: ServerProcess, world: Api
) -> None:
    """A browser keeps at most six HTTP/1.1 connections to a host. Each board used to hold one with
    its event stream, so six boards held all six: no fragment fetch, and no other dashboard page,
    could ever load. A page now follows the log over one WebSocket (for both its regions, each still
    refreshed by its own events), and sockets are not taken from those six."""
    first = context.new_page()
    login(first, server.admin_token)
    first.goto("about:blank")
    boards, sockets, streams = [], [], []
    for _ in range(8):
        board = context.new_page()
        board.on("websocket", lambda ws: sockets.append(ws.url))
        board.on("request", lambda r: streams.append(r.url) if "/api/v1/events/stream" in r.url else None)
        board.goto("/")
        wait_live(board)
        boards.append(board)
    # One socket per board, following both regions' families; no event stream.
    assert len(sockets) == 8 and not streams, (sockets, streams)
    for socket in sockets:
        assert urlsplit(socket).path == "/api/v1/events/ws", socket
        types = parse_qs(urlsplit(socket).query)["types"]
        assert {"agent.*", "issue.*", "knowledge.*"} <= set(types), socket

    issue_id = world.issue("Seen in eight tabs", priority="p1")
    for board in boards:
        expect(board.locator("[data-column=ready]")).to_contain_text("Seen in eight tabs")
    world.call("PATCH", f"{world.p}/issues/{issue_id}", {"status": "blocked"})
    for board in boards:
        expect(board.locator("#attention")).to_contain_text("Seen in eight tabs")
        expect(board.locator("[data-column=blocked]")).to_contain_text("Seen in eight tabs")

    other = context.new_page()
    other.goto("/leases")
    wait_live(other)


class UpgradeRefusingProxy:
    """A reverse proxy on loopback, in a thread of its own, that passes plain HTTP on to the server
    and answers every WebSocket upgrade 502, as a proxy without WebSocket support does. (A browser
    opens a connection of its own for each WebSocket, so the first request of a connection says.)"""

    def __init__(self, port: int) -> None:
        self.port = port
        self.refused = 0
        self.url = ""
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the proxy did not start"

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._serve(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._started.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"upgrade: websocket" in head.lower():
                self.refused += 1
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.port)
            upstream.write(head)

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
                sink.close()

            await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_behind_a_proxy_that_refuses_websockets_the_page_follows_the_event_stream(
    page: Page, server: ServerProcess, world: Api
) -> None:
    """Behind a proxy that refuses the WebSocket upgrade, the page falls back to Server-Sent Events
    (after three sockets that never opened) and stays live."""
    proxy = UpgradeRefusingProxy(int(server.url.rpartition(":")[2]))
    try:
        streams: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if "/api/v1/events/stream" in r.url else None)
        page.goto(proxy.url + "/login")
        page.fill("#token", server.admin_token)
        page.click("button[type=submit]")
        expect(page.locator("#agents-title")).to_be_visible()
        wait_live(page)
        assert proxy.refused == 3 and len(streams) == 1, (proxy.refused, streams)
        world.issue("Heard over the stream", priority="p1")
        expect(page.locator("[data-column=ready]")).to_contain_text("Heard over the stream")
    finally:
        proxy.close()


def test_a_page_refused_a_feed_at_its_credentials_cap_keeps_trying_and_goes_live(
    page: Page, server: ServerProcess, world: Api
) -> None:
    """A credential holds at most 16 open feeds. A page that finds them all taken is closed (1008)
    by the server, not refused on the way: it keeps trying its socket, with backoff, and goes live
    once a feed is given back (it does not fall back to the event stream, which the cap refuses too)."""
    _, token = world.token("viewer", "sixteen feeds")
    headers = {"Authorization": f"Bearer {token}"}
    url = server.url.replace("http://", "ws://") + "/api/v1/events/ws"
    holding = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(16):
                socket = await stack.enter_async_context(connect(url, additional_headers=headers))
                assert json.loads(await socket.recv())["type"] == "ready"
            holding.set()
            await asyncio.to_thread(release.wait, 30)

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(asyncio.run, hold())
        assert holding.wait(30), held.result()
        sockets: list[Any] = []
        streams: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws))
        page.on("request", lambda r: streams.append(r.url) if "/api/v1/events/stream" in r.url else None)
        login(page, token)
        expect(page.locator("#live-status")).to_have_text("reconnecting…")
        deadline = time.monotonic() + 15  # the third try comes 3 s after the first
        while not (len(sockets) >= 3 and sockets[2].is_closed()):
            assert time.monotonic() < deadline, sockets
            page.wait_for_timeout(50)
        release.set()
        held.result(30)
    wait_live(page)
    assert len(sockets) >= 3 and not streams, (len(sockets), streams)
    world.issue("Live past the cap", priority="p1")
    expect(page.locator("[data-column=ready]")).to_contain_text("Live past the cap")


def test_a_dropped_socket_reconnects_and_misses_nothing(
    page: Page, server: ServerProcess, world: Api
) -> None:
    """The socket is cut under an open page; an issue is created before the page connects again. The
    page resumes after the last event it took in, so the board shows the issue, with no reload."""
    routes: list[Any] = []
    urls: list[str] = []

    def proxy(ws: Any) -> None:
        urls.append(ws.url)
        if routes:  # the page's second socket: the change happens before it reaches the server
            world.issue("Made while the page was away", priority="p1")
        routes.append(ws)
        ws.connect_to_server()

    page.route_web_socket(re.compile(r"/api/v1/events/ws"), proxy)
    login(page, server.admin_token)
    page.goto("/?project=default")
    wait_live(page)
    page.evaluate("window.__still_here = true")
    routes[-1].close(code=1001, reason="a proxy restarted")
    expect(page.locator("[data-column=ready]")).to_contain_text("Made while the page was away")
    wait_live(page)
    first, second = (parse_qs(urlsplit(url).query) for url in urls[-2:])
    assert int(second["after"][0]) >= int(first["after"][0]), urls  # it resumed after what it took in
    assert page.evaluate("window.__still_here") is True


def test_long_unbroken_words_wrap_instead_of_widening_the_page(
    page: Page, server: ServerProcess, world: Api
) -> None:
    """A one-word title, activity, lease pattern or reason hundreds of characters long wraps inside
    its cell: the page is never wider than the window, on a desk or on a phone."""
    world.call("POST", "/projects", {"slug": "wide", "name": "Wide"})
    wide = Api(server.url, server.admin_token, "wide")
    wide.agent("longone", activity="a" * 190)
    issue_id = wide.issue("T" * 190)
    wide.call(
        "POST",
        wide.p + "/reservations",
        {"paths": ["src/" + "p" * 240], "reason": "r" * 400, "agent": "longone", "ttl_s": 600},
    )
    login(page, server.admin_token)
    for width in (1400, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for path in (
            "/?project=wide",
            "/leases?project=wide",
            f"/issues/{issue_id}?project=wide",
            "/agents/longone?project=wide",
        ):
            page.goto(path)
            expect(page.locator("main")).to_be_visible()
            scroll = page.evaluate("document.documentElement.scrollWidth")
            assert scroll <= width, (path, width, scroll)
    # ...and it does not crush the short columns beside it to a few letters a line ("ex/clu/siv/e")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto("/leases?project=wide")
    for short in ('td[data-label="Holder"] a', "span.kind"):  # one word each
        lines = page.locator(short).first.evaluate("e => e.getClientRects().length")
        assert lines == 1, (short, lines)


def test_the_badge_says_live_again_after_a_failed_update_is_followed_by_a_good_one(
    page: Page, server: ServerProcess, world: Api
) -> None:
    login(page, server.admin_token)
    page.goto("/?project=default")  # the board of the project the issues go to (not "wide")
    wait_live(page)
    failing = {"on": True}  # every board fetch fails until the proxy in between is "fixed"

    def gateway(route: Any) -> None:
        if failing["on"]:
            route.fulfill(status=502, body="bad gateway")
        else:
            route.continue_()

    page.route(lambda url: "/fragments/board" in url, gateway)  # (a glob's `*` stops at the query)
    world.issue("Refused on its way")
    expect(page.locator("#live-status")).to_have_text("update failed (502)", timeout=20_000)
    failing["on"] = False
    world.issue("Fetched fine after")
    expect(page.locator(".issue-card", has_text="Fetched fine after")).to_be_visible(timeout=20_000)
    expect(page.locator("#live-status")).to_have_text("live")


def test_pages_load_without_console_errors(page: Page, server: ServerProcess, world: Api) -> None:
    """No 404 for a favicon, no CSP refusal, no script error: the browser's console stays clean."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/login")
    login(page, server.admin_token)
    wait_live(page)
    for path in ("/leases", "/mail", "/graph"):
        page.goto(path)
        expect(page.locator("main")).to_be_visible()
    icon = page.request.get("/static/favicon.svg")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert errors == []
