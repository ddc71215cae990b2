"""The interactive API docs in chromium: Swagger UI renders the server's own API description, and
everything the page loads comes from the server's own origin, under the dashboard's strict CSP."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2
from playwright.sync_api import Page

from ..support import ServerProcess


def test_the_api_docs_load_only_from_our_origin(page: Page, server: ServerProcess) -> None:
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))

    page.goto("/api/v1/docs")
    # Swagger UI has fetched /api/v1/openapi.json and drawn an operation of ours
    page.locator(".opblock-summary-path").first.wait_for()
    paths = {t.replace("\u200b", "") for t in page.locator(".opblock-summary-path").all_inner_texts()}
    assert "/api/v1/projects/{project}/issues" in paths
    assert page.locator(".info .title").first.inner_text().startswith("Vibe Ensemble")

    ours = urlsplit(server.url)
    assert requested, "the page loaded nothing"
    for url in requested:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (ours.scheme, ours.netloc), url
    assert any(u.endswith("/api/v1/docs/assets/swagger-ui-bundle.js") for u in requested)
    assert any(u.endswith("/api/v1/openapi.json") for u in requested)
    assert not failed, failed
    assert not [m for m in console if "Content Security Policy" in m], console


def test_the_docs_page_has_the_strict_csp_and_only_its_own_files(server: ServerProcess) -> None:
    page = httpx2.get(server.url + "/api/v1/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "https:" not in csp
    assert "<script>" not in page.text and "http" not in page.text  # no inline script, no absolute URL
    assert httpx2.get(server.url + "/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
    # the package's folder is not browsable: only the listed files
    for name in ("redoc.standalone.js", "core.py", "..%2Fcore.py", "index.html"):
        missing = httpx2.get(server.url + "/api/v1/docs/assets/" + name)
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] == "not_found"
