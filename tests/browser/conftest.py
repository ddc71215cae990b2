"""Browser tests: Debian's chromium driven by Playwright against a real server process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from ..support import ServerProcess, start_server

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope, not session: while Playwright's sync API is open its event loop counts as running in
# this thread, which would break every async test that runs after these.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


NO_CHROMIUM = (
    "the browser tests need Debian's chromium on PATH: run `sudo apt-get install chromium` "
    "(or put a chromium executable on PATH), then `make test` again"
)


def chromium() -> str | None:
    return shutil.which("chromium")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without chromium, skip (never error), saying how to enable them; CI requires them to run."""
    if chromium():
        return
    if os.environ.get("VIBE_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError("VIBE_REQUIRE_BROWSER=1 but " + NO_CHROMIUM)
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = chromium()
    assert executable, NO_CHROMIUM
    browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("dashboard"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def context(browser: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
