"""Take the board screenshot of docs/dashboard.md from the scenario the browser tests use.

python -m tests.browser.screenshot docs/images/dashboard.png
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from ..support import start_server
from .conftest import CHROMIUM_ARGS
from .scenario import Api, populate


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            populate(Api(server.url, server.admin_token))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                page = browser.new_page(base_url=server.url, viewport={"width": 1400, "height": 900})
                page.goto("/login")
                page.fill("#token", server.admin_token)
                page.click("button[type=submit]")
                expect(page.locator("#live-status")).to_have_text("live")
                page.screenshot(path=str(target), full_page=True)
                browser.close()
        finally:
            server.stop()
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/dashboard.png"))
