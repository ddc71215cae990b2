"""A dashboard page asked for with a malformed path or query answers the dashboard's error page,
naming the field and the rule; the REST API keeps answering JSON."""

from __future__ import annotations

import httpx2

from vibe_ensemble.api.app import create_app
from vibe_ensemble.runtime import Runtime


async def test_malformed_dashboard_requests_get_the_error_page_not_json(runtime: Runtime) -> None:
    token = await runtime.bootstrap_admin_token()
    assert token
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        for path in ("/issues/abc", "/issues/99999999999999999999999"):
            page = await http.get(path)
            assert page.status_code == 422, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert "invalid_input" in page.text and "Input should be" in page.text, path
        api = await http.get("/api/v1/projects/default/issues/abc")
        assert api.status_code == 422 and api.headers["content-type"] == "application/json"
        assert api.json()["error"]["details"]["errors"][0]["field"] == "issue_id"
