"""Take the dashboard screenshots of docs/dashboard.md from the scenario the browser tests use.

python -m tests.browser.screenshot docs/images

writes dashboard-1440x900.png (a desktop: what fits without scrolling) and dashboard-390x844.png
(a phone: the top of the page, and dashboard-390x844-full.png the whole of it), and one
dashboard-<page>-1440x900.png per overseer page (leases, mail, thread, agent, graph, knowledge,
trends), with phone shots of the mail, thread and agent pages.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, expect, sync_playwright

from ..support import start_server
from .conftest import CHROMIUM_ARGS
from .scenario import Api, Heartbeats, populate, populate_attention

# Short thresholds so that the scenario shows every kind of attention item within seconds.
ENV = {
    "VIBE_OFFLINE_AFTER_S": "3",
    "VIBE_SWEEP_INTERVAL_S": "1",
    "VIBE_ATTENTION_ACK_AFTER_S": "1",
    "VIBE_ATTENTION_LEASE_WARNING_S": "300",
}


# The overseer's pages: (file name, path, what to wait for); the thread is the freeze message's.
PAGES = (
    ("leases", "/leases", "tr[data-lease]"),
    ("mail", "/mail", "tr[data-thread]"),
    ("thread", "/mail/thread?thread={thread}", "article.message"),
    ("agent", "/agents/brook", "article.agent"),
    ("graph", "/graph", "svg.dep-graph"),
    ("knowledge", "/knowledge?q=session+cookies", ".knowledge-hits li"),
    ("trends", "/trends", "[data-chart]"),
)


def more_work(api: Api) -> str:
    """A longer dependency chain, knowledge with a second version, a thread: for the overseer pages."""
    schema = api.issue("Session table migration", priority="p1", labels=["db"])
    store = api.issue("Session store", priority="p1", depends_on=[schema])
    api.issue("Logout everywhere", priority="p2", depends_on=[store])
    api.issue("Session admin page", priority="p3", depends_on=[store, 4])
    note = api.call(
        "POST",
        api.p + "/knowledge",
        {
            "kind": "decision",
            "title": "Sessions in signed cookies",
            "body": "No server-side store.",
            "tags": ["auth"],
        },
    )
    api.call(
        "PATCH",
        f"{api.p}/knowledge/{note['id']}",
        {"body": "Sessions live in signed cookies; the server keeps no session store."},
    )
    sent = api.call(
        "POST",
        api.p + "/messages",
        {
            "subject": "Cookie flags for sessions",
            "body": "HttpOnly and SameSite=Strict on every session cookie, please.",
            "to": ["brook", "cyd"],
            "ack_required": True,
            "agent": "ada",
        },
    )
    api.call("POST", f"{api.p}/agents/brook/inbox/ack", {"ids": [sent["id"]]})
    api.call(
        "POST",
        api.p + "/messages",
        {
            "subject": "Re: Cookie flags for sessions",
            "body": "Done in #2.",
            "to": ["ada"],
            "thread_id": sent["thread_id"],
            "agent": "brook",
        },
    )
    api.call(
        "POST",
        api.p + "/messages",
        {"subject": "Ship it by Friday", "body": "From the lead.", "broadcast": True},
    )
    thread: str = sent["thread_id"]
    return thread


def overseer_pages(browser: Browser, url: str, token: str, api: Api, target: Path) -> None:
    thread = more_work(api)
    for width, height in ((1440, 900), (390, 844)):
        page = browser.new_page(base_url=url, viewport={"width": width, "height": height})
        page.goto("/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        for name, path, ready in PAGES:
            if width < 800 and name not in ("mail", "thread", "agent"):
                continue
            page.goto(path.format(thread=thread))
            expect(page.locator(ready).first).to_be_visible()
            expect(page.locator("#live-status")).to_have_text("live")  # not a "not live" badge caught early
            page.screenshot(path=str(target / f"dashboard-{name}-{width}x{height}.png"))
        page.close()


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), extra_env=ENV)
        try:
            api = Api(server.url, server.admin_token)
            populate(api)
            with Heartbeats(api, ["ada", "brook"]), Heartbeats(api, ["cyd"], status="idle"):
                populate_attention(api)
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                    for width, height in ((1440, 900), (390, 844)):
                        page = browser.new_page(
                            base_url=server.url, viewport={"width": width, "height": height}
                        )
                        page.goto("/login")
                        page.fill("#token", server.admin_token)
                        page.click("button[type=submit]")
                        expect(page.locator("#live-status")).to_have_text("live")
                        silent = page.locator('#attention li[data-rule="silent"]').first
                        expect(silent).to_be_visible(timeout=20_000)
                        expect(page.locator('#attention li[data-rule="unacked"]').first).to_be_visible()
                        name = f"dashboard-{width}x{height}"
                        page.screenshot(path=str(target / f"{name}.png"))
                        if width < 800:
                            page.screenshot(path=str(target / f"{name}-full.png"), full_page=True)
                        page.close()
                    overseer_pages(browser, server.url, server.admin_token, api, target)
                    browser.close()
        finally:
            server.stop()
    print(f"wrote the screenshots to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
