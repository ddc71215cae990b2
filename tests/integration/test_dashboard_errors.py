"""A dashboard page asked for with a malformed path or query answers the dashboard's error page,
naming the field and the rule; the REST API keeps answering JSON. A login's session ends with its
token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx2

from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.web import session
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import TokenRole
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


async def test_a_login_with_an_expiring_token_gets_a_session_that_ends_with_it(runtime: Runtime) -> None:
    expires_at = datetime.now(UTC) + timedelta(minutes=10)
    _, token = await runtime.services.tokens.create(SYSTEM, role=TokenRole.VIEWER, expires_at=expires_at)
    _, lasting = await runtime.services.tokens.create(SYSTEM, role=TokenRole.VIEWER)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)), base_url="http://127.0.0.1"
    ) as http:
        for secret, most, least in ((token, 600, 590), (lasting, 43200, 43200)):
            http.cookies.clear()
            answer = await http.post("/login", data={"token": secret}, headers={"Origin": "http://127.0.0.1"})
            assert answer.status_code == 303, answer.text
            cookie = answer.headers["set-cookie"]
            max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
            assert least <= max_age <= most, cookie
            value = cookie.split(f"{session.COOKIE}=")[1].split(";")[0].strip('"')
            signed_expiry = int(value.split(".")[2])
            assert abs(signed_expiry - (datetime.now(UTC).timestamp() + max_age)) < 5


async def test_over_https_the_session_cookie_is_host_only_and_an_unprefixed_one_is_ignored(
    runtime: Runtime,
) -> None:
    """A page on a sibling subdomain could set its own `vibe_session` in the overseer's browser, who
    then acted as the attacker ("cookie tossing"). Over HTTPS the cookie is `__Host-vibe_session`,
    which a browser takes from this very host only; a plain `vibe_session` is not read there."""
    _, token = await runtime.services.tokens.create(SYSTEM, role=TokenRole.VIEWER)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)), base_url="https://127.0.0.1"
    ) as http:
        answer = await http.post("/login", data={"token": token}, headers={"Origin": "https://127.0.0.1"})
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{session.SECURE_COOKIE}=") and "Secure" in cookie and "Path=/" in cookie
        assert "Domain" not in cookie
        value = cookie.split(f"{session.SECURE_COOKIE}=")[1].split(";")[0].strip('"')
        http.cookies.clear()
        tossed = await http.get("/", headers={"Cookie": f"{session.COOKIE}={value}"})
        assert tossed.status_code == 303 and tossed.headers["location"] == "/login"  # not signed in
        kept = await http.get("/", headers={"Cookie": f"{session.SECURE_COOKIE}={value}"})
        assert kept.status_code == 200
