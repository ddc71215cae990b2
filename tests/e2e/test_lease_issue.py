"""A lease names the issue it serves, over MCP (the official SDK client) and REST, against a real server."""

from __future__ import annotations

import re

import httpx2

from ..support import ServerProcess, call, call_error, mcp_client
from .security_support import auth, make_token


async def test_a_lease_names_its_issue_over_mcp_and_rest(server: ServerProcess) -> None:
    token = make_token(server, "worker", project="default", agent="ann", tool_profile=None)
    reservations = server.url + "/api/v1/projects/default/reservations"
    async with mcp_client(server.mcp_url, token) as ann:
        await call(ann, "register_agent", name="ann")
        issue = await call(ann, "create_issue", title="rewrite the parser")

        tools = {t.name: t for t in (await ann.list_tools()).tools}
        assert "issue" in tools["reserve_paths"].input_schema["properties"]

        granted = await call(ann, "reserve_paths", paths=["src/parser/**"], issue=issue["id"], ttl_s=120)
        [lease] = granted["granted"]
        assert (lease["pattern"], lease["issue"]) == ("src/parser/**", issue["id"])
        beat = await call(ann, "heartbeat")  # a lease ending within five minutes is listed, with its issue
        assert [(r["pattern"], r["issue"]) for r in beat["expiring_reservations"]] == [
            ("src/parser/**", issue["id"])
        ]

        briefing = (await ann.get_prompt("worker_briefing", {})).messages[0].content
        mine = rf"src/parser/\*\* \(exclusive, \d+ min left, for #{issue['id']}\)"
        assert re.search(mine, briefing.text)  # type: ignore[union-attr]

        error = await call_error(ann, "reserve_paths", paths=["src/lexer.py"], issue=issue["id"] + 500)
        assert f"[invalid_input] issue: no such issue in this project: {issue['id'] + 500}" in error
        error = await call_error(ann, "reserve_paths", paths=["src/lexer.py"], issue=0)
        assert "issue" in error

    listed = httpx2.get(reservations, headers=auth(token))
    assert listed.status_code == 200
    assert [(r["pattern"], r["issue"]) for r in listed.json()] == [("src/parser/**", issue["id"])]

    shared = httpx2.post(
        reservations, headers=auth(token), json={"paths": ["docs/parser.md"], "issue": issue["id"]}
    )
    assert shared.status_code == 200, shared.text
    assert [r["issue"] for r in shared.json()["granted"]] == [issue["id"]]

    missing = httpx2.post(reservations, headers=auth(token), json={"paths": ["README.md"], "issue": 999_999})
    assert missing.status_code == 422
    body = missing.json()["error"]
    assert body["code"] == "invalid_input" and body["details"]["field"] == "issue"
    assert "no such issue in this project: 999999" in body["message"]
    assert (
        httpx2.post(reservations, headers=auth(token), json={"paths": ["x"], "issue": 0}).status_code == 422
    )
    after = httpx2.get(reservations, headers=auth(token)).json()
    assert sorted(r["pattern"] for r in after) == [
        "docs/parser.md",
        "src/parser/**",
    ]  # refusals changed nothing
