"""Take the dashboard screenshots of docs/dashboard.md from the scenario the browser tests use.

python -m tests.browser.screenshot docs/images

writes dashboard-1440x900.png (a desktop: what fits without scrolling) and dashboard-390x844.png
(a phone: the top of the page, and dashboard-390x844-full.png the whole of it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

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
                    browser.close()
        finally:
            server.stop()
    print(f"wrote the screenshots to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
