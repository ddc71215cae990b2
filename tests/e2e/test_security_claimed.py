"""The claimed-issue rule on both doors of a real server: over REST and over MCP, an agent that
does not hold an issue cannot update, reassign or close it (403 / `[permission_denied]`, audited,
nothing changed) but may comment; its assignee and a coordinator may change it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from ..support import ServerProcess, call, call_error, mcp_client, start_server
from .security_support import auth, error_code, make_token

RULE = "only by that agent, a coordinator or an admin; anyone else may comment on it"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("claimed"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def team(server: ServerProcess) -> dict[str, Any]:
    """A fresh project with agents w1 and w2 (bound worker tokens) and a coordinator token."""
    slug = f"p{uuid.uuid4().hex[:10]}"
    with httpx2.Client(
        base_url=server.url + "/api/v1", headers=auth(server.admin_token), timeout=10
    ) as admin:
        assert admin.post("/projects", json={"slug": slug}).status_code == 201
        for name in ("w1", "w2"):
            assert admin.post(f"/projects/{slug}/agents", json={"name": name}).status_code == 201
    return {
        "slug": slug,
        "w1": make_token(server, "worker", project=slug, agent="w1", label=f"{slug}-w1"),
        "w2": make_token(server, "worker", project=slug, agent="w2", label=f"{slug}-w2"),
        "lead": make_token(server, "coordinator", project=slug, label=f"{slug}-lead"),
    }


def _rest(server: ServerProcess, token: str, slug: str) -> httpx2.Client:
    return httpx2.Client(base_url=f"{server.url}/api/v1/projects/{slug}", headers=auth(token), timeout=10)


def _claimed_by_w1(server: ServerProcess, team: dict[str, Any]) -> int:
    with _rest(server, team["w1"], team["slug"]) as w1:
        issue = w1.post("/issues", json={"title": "w1's job"}).json()
        claimed = w1.post(f"/issues/{issue['id']}/claim", json={})
        assert claimed.status_code == 200, claimed.text
    return int(issue["id"])


def test_rest_another_worker_may_only_comment(server: ServerProcess, team: dict[str, Any]) -> None:
    issue_id = _claimed_by_w1(server, team)
    with _rest(server, team["w2"], team["slug"]) as w2:
        before = w2.get(f"/issues/{issue_id}").json()
        attempts = [
            ("PATCH", f"/issues/{issue_id}", {"title": "mine now"}),
            ("PATCH", f"/issues/{issue_id}", {"assignee": "w2"}),
            ("PATCH", f"/issues/{issue_id}", {"assignee": None}),
            ("POST", f"/issues/{issue_id}/close", {"resolution": "done by someone else"}),
        ]
        for method, path, body in attempts:
            r = w2.request(method, path, json=body)
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert error["code"] == "permission_denied"
            assert f"issue {issue_id} is claimed by w1" in error["message"] and RULE in error["message"]
            assert error["details"]["operation"] == "issue.change_claimed"
        after = w2.get(f"/issues/{issue_id}").json()
        assert after["issue"] == before["issue"]
        assert w2.post(f"/issues/{issue_id}/comments", json={"body": "I can help"}).status_code == 201
    with httpx2.Client(
        base_url=server.url + "/api/v1", headers=auth(server.admin_token), timeout=10
    ) as admin:
        denied = admin.get("/audit", params={"action": "access.denied", "limit": 100}).json()["items"]
    mine = [
        d for d in denied if d["actor"] == "w2" and d["details"].get("operation") == "issue.change_claimed"
    ]
    assert len(mine) == len(attempts)


def test_rest_assignee_and_coordinator_change_it(server: ServerProcess, team: dict[str, Any]) -> None:
    issue_id = _claimed_by_w1(server, team)
    with _rest(server, team["w1"], team["slug"]) as w1:
        r = w1.patch(f"/issues/{issue_id}", json={"title": "renamed by w1"})
        assert r.status_code == 200 and r.json()["title"] == "renamed by w1", r.text
    with _rest(server, team["lead"], team["slug"]) as lead:
        r = lead.patch(f"/issues/{issue_id}", json={"assignee": "w2"})
        assert r.status_code == 200 and r.json()["assignee"] == "w2", r.text
    with _rest(server, team["w1"], team["slug"]) as w1:  # w1 no longer holds it
        assert w1.post(f"/issues/{issue_id}/close", json={"resolution": "x"}).status_code == 403
    with _rest(server, team["w2"], team["slug"]) as w2:
        r = w2.post(f"/issues/{issue_id}/close", json={"resolution": "done"})
        assert r.status_code == 200 and r.json()["issue"]["status"] == "done", r.text


async def test_mcp_another_worker_may_only_comment(server: ServerProcess, team: dict[str, Any]) -> None:
    issue_id = _claimed_by_w1(server, team)
    async with mcp_client(server.mcp_url, team["w2"]) as w2:
        before = await call(w2, "get_issue", id=issue_id)
        for tool, arguments in [
            ("update_issue", {"id": issue_id, "title": "mine now"}),
            ("update_issue", {"id": issue_id, "assignee": "w2"}),
            ("update_issue", {"id": issue_id, "status": "blocked"}),
            ("close_issue", {"id": issue_id, "resolution": "done by someone else"}),
        ]:
            text = await call_error(w2, tool, **arguments)
            assert error_code(text) == "permission_denied", text
            assert f"issue {issue_id} is claimed by w1" in text and RULE in text
        assert (await call(w2, "get_issue", id=issue_id))["issue"] == before["issue"]
        comment = await call(w2, "comment_issue", id=issue_id, body="I can help")
        assert comment["author"] == "w2"
    async with mcp_client(server.mcp_url, team["w1"]) as w1:
        closed = await call(w1, "close_issue", id=issue_id, resolution="done")
        assert closed["issue"]["status"] == "done"


async def test_mcp_coordinator_reassigns(server: ServerProcess, team: dict[str, Any]) -> None:
    issue_id = _claimed_by_w1(server, team)
    async with mcp_client(server.mcp_url, team["lead"]) as lead:
        moved = await call(lead, "update_issue", id=issue_id, assignee="w2")
        assert moved["assignee"] == "w2"
