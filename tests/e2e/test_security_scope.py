"""Project scope and identity on every door of a real server: REST, MCP, the events page, SSE and WS.

A token scoped to `alpha` sees and changes nothing of `beta`; an agent-bound token acts only as its
agent, and every refused attempt is written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from vibe_ensemble.api import access
from vibe_ensemble.domain.permissions import GLOBAL_OPS

from ..support import ServerProcess, call, call_error, mcp_client, start_server
from .security_support import (
    auth,
    body_properties,
    error_code,
    make_token,
    query_params,
    request_body,
    sample,
)

QUICK = {"timeout_s": 0.1}
BETA: dict[str, Any] = {
    "agent": "beta-dev",
    "to": ["beta-dev"],
    "title": "probe",
}  # a team token names who it acts as


def _rest(server: ServerProcess, token: str) -> httpx2.Client:
    return httpx2.Client(base_url=server.url + "/api/v1", headers=auth(token), timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for this module: the tests below only add to what `two_projects` made."""
    proc = start_server(tmp_path_factory.mktemp("scope"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def two_projects(server: ServerProcess) -> dict[str, Any]:
    """alpha and beta, each with an agent, an issue and a message; then one last event in alpha."""
    with _rest(server, server.admin_token) as admin:
        ids: dict[str, Any] = {}
        for slug in ("alpha", "beta"):
            assert admin.post("/projects", json={"slug": slug}).status_code == 201
            assert admin.post(f"/projects/{slug}/agents", json={"name": f"{slug}-dev"}).status_code == 201
            issue = admin.post(f"/projects/{slug}/issues", json={"title": f"{slug} secret plan"}).json()
            sent = admin.post(
                f"/projects/{slug}/messages",
                json={"subject": f"{slug} mail", "body": "b", "to": [f"{slug}-dev"], "agent": f"{slug}-dev"},
            )
            assert sent.status_code == 201, sent.text
            ids[slug] = issue["id"]
        last = admin.post(
            f"/projects/alpha/issues/{ids['alpha']}/comments", json={"body": "last", "agent": "alpha-dev"}
        )
        assert last.status_code == 201
        last_event = admin.get("/events", params={"after": 0, "limit": 1000}).json()["last_id"]
    return {
        "issues": ids,
        "last_event": last_event,
        "coordinator": make_token(server, "coordinator", project="alpha", label="alpha-coord"),
        "viewer": make_token(server, "viewer", project="alpha", label="alpha-viewer"),
        "bound": make_token(server, "worker", project="alpha", agent="alpha-dev", label="alpha-dev"),
    }


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


def test_rest_scoped_token_is_refused_every_route_of_another_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    openapi = httpx2.get(server.url + "/api/v1/openapi.json").json()
    beta = {"project": "beta", "issue_id": str(two_projects["issues"]["beta"]), "name": "beta-dev"}
    probed = 0
    with httpx2.Client(base_url=server.url, headers=auth(two_projects["coordinator"]), timeout=10) as client:
        for method, path in access.ROUTES:
            if "{project}" not in path or method == "WS":
                continue
            operation = openapi["paths"][path][method.lower()]
            query = query_params(operation, openapi, QUICK)
            body = request_body(operation, openapi)
            if isinstance(body, dict):
                body.update({k: v for k, v in BETA.items() if k in body_properties(operation, openapi)})
            r = client.request(method, _fill(path, beta), json=body, params=query)
            assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text[:300]}"
            assert r.json()["error"]["code"] == "permission_denied"
            assert "beta secret" not in r.text and "beta mail" not in r.text
            probed += 1
    assert probed >= 15


def test_rest_global_routes_show_only_the_scoped_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    with _rest(server, two_projects["coordinator"]) as client:
        assert [p["slug"] for p in client.get("/projects").json()] == ["alpha"]
        events = client.get("/events", params={"after": 0, "limit": 1000}).json()["items"]
        assert events and {e["project"] for e in events} == {"alpha"}
        assert "beta" not in json.dumps(events)
        assert client.get("/events", params={"project": "beta"}).status_code == 403
        titles = [i["title"] for i in client.get("/projects/alpha/issues").json()["items"]]
        assert "alpha secret plan" in titles and "beta secret plan" not in titles
        # operations beyond one project are refused to any scoped token, even an admin's
    boss = make_token(server, "admin", project="alpha", label="alpha-admin")
    with _rest(server, boss) as client:
        for method, path, body in (
            ("POST", "/projects", {"slug": "gamma"}),
            ("GET", "/tokens", None),
            ("POST", "/tokens", {"role": "admin"}),
            ("GET", "/audit", None),
        ):
            r = client.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert "reaches beyond one project" in r.json()["error"]["message"]
    assert {op.value for op in GLOBAL_OPS} == {"project.admin", "token.admin", "audit.read"}


async def test_mcp_scoped_token_is_refused_every_tool_on_another_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    probed = 0
    async with mcp_client(server.mcp_url, two_projects["coordinator"]) as client:
        tools = (await client.list_tools()).tools
        for tool in tools:
            if "project" not in tool.input_schema["properties"]:
                continue
            arguments = sample(tool.input_schema, tool.input_schema.get("$defs", {}))
            arguments.update({k: v for k, v in QUICK.items() if k in tool.input_schema["properties"]})
            arguments["project"] = "beta"
            arguments.update({k: v for k, v in BETA.items() if k in tool.input_schema["properties"]})
            text = await call_error(client, tool.name, **arguments)
            assert error_code(text) == "permission_denied", f"{tool.name}: {text}"
            assert "scoped to project 'alpha'" in text
            probed += 1
        assert probed >= 15
        assert [p["slug"] for p in await call(client, "list_projects")] == ["alpha"]
        titles = [i["title"] for i in (await call(client, "list_issues"))["items"]]
        assert "alpha secret plan" in titles and "beta secret plan" not in titles
        text = await call_error(client, "get_issue", id=two_projects["issues"]["beta"])
        assert error_code(text) == "not_found"  # beta's issue does not exist as far as alpha can tell
        assert "beta secret" not in text


def _sse_events(server: ServerProcess, token: str, until: int, **params: Any) -> list[dict[str, Any]]:
    """Read the SSE feed from the start until event `until` has arrived."""
    seen: list[dict[str, Any]] = []
    with httpx2.stream(
        "GET",
        server.url + "/api/v1/events/stream",
        params={"after": 0, **params},
        headers=auth(token),
        timeout=httpx2.Timeout(10),
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["id"] >= until:
                    break
    return seen


def test_sse_feed_of_a_scoped_token_carries_only_its_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    events = _sse_events(server, two_projects["viewer"], two_projects["last_event"])
    assert events[-1]["id"] == two_projects["last_event"]
    assert {e["project"] for e in events} == {"alpha"}
    assert "beta" not in json.dumps(events)
    r = httpx2.get(
        server.url + "/api/v1/events/stream",
        params={"project": "beta"},
        headers=auth(two_projects["viewer"]),
        timeout=10,
    )
    assert r.status_code == 403


async def test_websocket_feed_of_a_scoped_token_carries_only_its_project(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    url = server.url.replace("http://", "ws://") + "/api/v1/events/ws?after=0"
    seen: list[dict[str, Any]] = []
    async with connect(url, additional_headers=auth(two_projects["viewer"])) as ws:
        async with asyncio.timeout(10):
            while not seen or seen[-1]["id"] < two_projects["last_event"]:
                message = json.loads(await ws.recv())
                if message["type"] == "event":
                    seen.append(message["event"])
    assert seen[-1]["id"] == two_projects["last_event"]
    assert {e["project"] for e in seen} == {"alpha"}
    before = _denials(server, "token:alpha-viewer")
    async with connect(url + "&project=beta", additional_headers=auth(two_projects["viewer"])) as ws:
        async with asyncio.timeout(10):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    fresh = [e for e in _denials(server, "token:alpha-viewer") if e["id"] not in {b["id"] for b in before}]
    assert [e["details"]["project"] for e in fresh] == ["beta"]  # the refusal is audited


async def test_bound_token_cannot_impersonate_and_the_attempt_is_audited(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    bound = two_projects["bound"]
    # REST: the agent in the path and the agent field are both checked
    with _rest(server, bound) as client:
        r = client.post("/projects/alpha/agents/someone-else/heartbeat", json={})
        assert r.status_code == 403 and "bound to agent 'alpha-dev'" in r.json()["error"]["message"]
        r = client.post("/projects/alpha/issues", json={"title": "forged", "agent": "someone-else"})
        assert r.status_code == 403
        assert client.get("/projects/alpha/agents/someone-else/inbox").status_code == 403
        assert client.post("/projects/alpha/agents/alpha-dev/heartbeat", json={}).status_code == 200
    # MCP: the `agent` argument cannot be forged either
    async with mcp_client(server.mcp_url, bound) as client:
        text = await call_error(client, "send_message", subject="s", body="b", to=["alpha-dev"], agent="boss")
        assert error_code(text) == "permission_denied" and "cannot act as 'boss'" in text
        text = await call_error(client, "fetch_inbox", agent="boss")
        assert error_code(text) == "permission_denied"
        made = await call(client, "create_issue", title="mine")
        assert made["created_by"] == "alpha-dev"
    with _rest(server, server.admin_token) as admin:
        denied = admin.get("/audit", params={"action": "access.denied", "actor": "alpha-dev"}).json()["items"]
        issues = admin.get("/projects/alpha/issues", params={"query": "forged"}).json()["items"]
    assert len(denied) == 5
    assert {e["details"]["agent"] for e in denied} >= {"someone-else", "boss"}
    assert {e["remote"] for e in denied} == {"127.0.0.1"}
    assert issues == []
    assert bound not in json.dumps(denied)


async def test_mcp_resources_and_prompts_of_another_project_are_refused(
    server: ServerProcess, two_projects: dict[str, Any]
) -> None:
    beta_issue = two_projects["issues"]["beta"]
    before = _denials(server, "token:alpha-coord")
    async with mcp_client(server.mcp_url, two_projects["coordinator"]) as client:
        listing = await client.read_resource("vibe://projects")
        text = listing.contents[0].text  # type: ignore[union-attr]
        assert "alpha" in text and "beta" not in text
        for uri in (
            "vibe://projects/beta",
            "vibe://projects/beta/board",
            f"vibe://projects/beta/issues/{beta_issue}",
            "vibe://projects/beta/knowledge/1",
        ):
            with pytest.raises(MCPError) as refused:
                await client.read_resource(uri)
            assert "[permission_denied]" in str(refused.value), uri
        with pytest.raises(MCPError) as refused:
            await client.read_resource(f"vibe://projects/alpha/issues/{beta_issue}")
        assert "[not_found]" in str(refused.value)
        for prompt in ("coordinator_briefing", "worker_briefing"):
            with pytest.raises(MCPError) as refused:
                await client.get_prompt(prompt, {"project": "beta", "agent": "beta-dev"})
            assert "[permission_denied]" in str(refused.value), prompt
    fresh = [e for e in _denials(server, "token:alpha-coord") if e["id"] not in {b["id"] for b in before}]
    assert len(fresh) == 6  # four resources and two prompts, each refused and written down
    assert {e["details"]["project"] for e in fresh} == {"beta"}


def _denials(server: ServerProcess, actor: str) -> list[dict[str, Any]]:
    with _rest(server, server.admin_token) as admin:
        page = admin.get("/audit", params={"action": "access.denied", "actor": actor, "limit": 1000})
    items: list[dict[str, Any]] = page.json()["items"]
    return items
