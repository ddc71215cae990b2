"""MCP over Streamable HTTP against a real server: both protocol eras, tool errors, bearer tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from tests.support import ServerProcess, call, call_error, mcp_client, mcp_error

# The `_meta` a 2026-07-28 request carries (what the official client sends), for requests made by hand.
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}

CORE_TOOLS = {
    "register_agent",
    "heartbeat",
    "list_agents",
    "create_issue",
    "list_issues",
    "get_issue",
    "update_issue",
    "claim_issue",
    "comment_issue",
    "close_issue",
    "send_message",
    "fetch_inbox",
    "mark_read",
    "acknowledge_messages",
}


async def test_tools_in_both_protocol_eras(server: ServerProcess) -> None:
    """`auto` negotiates the 2026-07-28 protocol; `legacy` initialises with 2025-11-25 (stateless)."""
    for mode, version in (("auto", "2026-07-28"), ("legacy", "2025-11-25")):
        await _exercise_tools(server, mode, version)


async def _exercise_tools(server: ServerProcess, mode: str, version: str) -> None:
    async with mcp_client(server.mcp_url, server.admin_token, mode=mode) as client:
        assert client.protocol_version == version
        tools = (await client.list_tools()).tools
        names = {t.name for t in tools}
        assert names >= CORE_TOOLS, sorted(CORE_TOOLS - names)
        assert not names & {"create_project", "list_projects", "retire_agent"}  # those are the full profile
        schema = next(t for t in tools if t.name == "create_issue").input_schema
        assert schema["required"] == ["title"]

        agent = await call(client, "register_agent", name=f"w-{mode}", capabilities=["python"])
        assert agent["name"] == f"w-{mode}"
        assert agent["capabilities"] == ["python"]
        first = await call(client, "create_issue", title="first", labels=["python"], agent=agent["name"])
        second = await call(client, "create_issue", title="second", depends_on=[first["id"]])
        claimed = await call(client, "claim_issue", agent=agent["name"])
        assert (claimed["id"], claimed["assignee"], claimed["status"]) == (
            first["id"],
            agent["name"],
            "in_progress",
        )
        comment = await call(client, "comment_issue", id=first["id"], body="done soon", agent=agent["name"])
        assert comment["author"] == agent["name"]
        closed = await call(client, "close_issue", id=first["id"], resolution="shipped", agent=agent["name"])
        assert closed["issue"]["status"] == "done"
        assert [i["id"] for i in closed["now_ready"]] == [second["id"]]
        detail = await call(client, "get_issue", id=first["id"])
        assert [c["body"] for c in detail["comments"]] == ["done soon"]
        assert [d["id"] for d in detail["dependants"]] == [second["id"]]
        page = await call(client, "list_issues", ready=True)
        ready = [i["id"] for i in page["items"]]
        assert second["id"] in ready
        assert first["id"] not in ready
        updated = await call(client, "update_issue", id=second["id"], priority="p0", expected_version=1)
        assert updated["version"] == 2

        await call(client, "register_agent", name=f"peer-{mode}")
        sent = await call(
            client, "send_message", to=[f"peer-{mode}"], subject="hi", body="b", agent=agent["name"]
        )
        inbox = await call(client, "fetch_inbox", agent=f"peer-{mode}")
        assert [i["message"]["id"] for i in inbox["items"]] == [sent["id"]]
        assert await call(client, "acknowledge_messages", ids=[sent["id"]], agent=f"peer-{mode}") == [
            sent["id"]
        ]
        assert await call(client, "mark_read", ids=[sent["id"]], agent=f"peer-{mode}") == [sent["id"]]
        beat = await call(client, "heartbeat", status="working", activity="testing", agent=agent["name"])
        assert beat["agent"]["status"] == "working"
        assert {a["name"] for a in await call(client, "list_agents")} >= {agent["name"], f"peer-{mode}"}


async def test_tool_errors_name_the_field(server: ServerProcess) -> None:
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        await call(client, "register_agent", name="w1")
        empty = await call_error(client, "create_issue", title="  ")
        # a refusal of the tool reads as one of its arguments' does: `[code]` first (no SDK prefix)
        assert empty.startswith("[invalid_input] title: must not be empty")
        big = await call_error(client, "create_issue", title="t", body="x" * 65_537)
        assert "body: must be at most 65536 characters (got 65537)" in big
        enum = await call_error(client, "create_issue", title="t", priority="p9")
        assert "priority" in enum
        assert "'p0', 'p1', 'p2' or 'p3'" in enum
        missing = await call_error(client, "get_issue", id=999)
        assert missing.startswith("[not_found] issue 999 does not exist")
        stale = await call(client, "create_issue", title="versioned")
        conflict = await call_error(client, "update_issue", id=stale["id"], title="x", expected_version=7)
        assert "[version_conflict]" in conflict
        assert '"current_version": 1' in conflict
        team = await call_error(client, "claim_issue")
        assert "[invalid_input] agent: required" in team
        # an argument the tool does not take is refused, never ignored
        unknown = await call_error(client, "claim_issue", issue=stale["id"], agent="w1")
        assert unknown.startswith("[invalid_input] claim_issue: unknown argument 'issue'; ")
        assert '{"field": "issue", "rule": "not an argument of claim_issue; it accepts: ' in unknown
        assert "claim_issue accepts: id, agent, project" in unknown
        typed = await call_error(client, "get_issue", id="three")
        assert typed.startswith("[invalid_input] get_issue: id: Input should be a valid integer")
        assert "\n" not in typed and "(got 'three')" in typed
        assert typed.endswith('{"field": "id", "rule": "Input should be a valid integer"}')
        # JSON's types are the schema's: no number from a boolean or a string, no boolean from "yes"
        for lax in (True, str(stale["id"])):
            assert "id: Input should be a valid integer" in await call_error(client, "get_issue", id=lax)
        yes = await call_error(client, "list_agents", include_retired="yes")
        assert yes.startswith("[invalid_input] list_agents: include_retired: Input should be a valid boolean")
        ids = await call_error(client, "create_issue", title="t", depends_on=[str(stale["id"])])
        assert "depends_on[0]: Input should be a valid integer" in ids
        # a missing argument is named, not echoed with the whole call
        absent = await call_error(client, "close_issue", id=stale["id"])
        assert absent == (
            "[invalid_input] close_issue: resolution: Field required "
            '{"field": "resolution", "rule": "Field required"}'
        )
        # every length the schema publishes is enforced, filters and the project included
        long_filter = await call_error(client, "list_issues", assignee="x" * 200_000)
        assert long_filter == (
            "[invalid_input] list_issues: assignee: must be at most 64 characters (got 200000) "
            '{"field": "assignee", "rule": "must be at most 64 characters (got 200000)"}'
        )
        long_project = await call_error(client, "list_issues", project="x" * 100_000)
        assert "project: must be at most 64 characters (got 100000)" in long_project
        assert len(long_project) < 300  # the name is not echoed back
        many = await call_error(client, "reserve_paths", paths=["a.py"] * 101, agent="w1")
        assert "paths: must be at most 100 items (got 101)" in many
        offline = await call_error(client, "heartbeat", status="offline", agent="w1")
        assert offline.startswith(
            "[invalid_input] heartbeat: status: Input should be 'idle', 'working' or 'blocked'"
        )
        assert (await call(client, "get_issue", id=stale["id"])).get("assignee") is None  # nothing claimed
        # a tool this server does not have is named (cut short) with the nearest names, not echoed whole
        typo = await call_error(client, "claim_isue", id=stale["id"])
        assert typo == (
            "[invalid_input] no tool named 'claim_isue' here; did you mean claim_issue? "
            '{"field": "name", "rule": "must be one of this server\'s tools (tools/list names them)"}'
        )
        # a tool of the full profile, asked for on a core token: where to get it
        elsewhere = await call_error(client, "create_project", slug="elsewhere")
        assert "it is in the `full` tool profile, and this token's is `core`" in elsewhere, elsewhere
        assert "--tool-profile full" in elsewhere
        huge = await call_error(client, "x" * 100_000)
        assert huge.startswith("[invalid_input] no tool named 'xxxx") and len(huge) < 300
        # nothing was created by the refused calls
        assert [i["title"] for i in (await call(client, "list_issues"))["items"]] == ["versioned"]


async def test_params_the_sdk_refuses_are_refused_naming_the_field(server: ServerProcess) -> None:
    """The SDK checks a request's params after our layers and says only "Invalid request parameters":
    the refusal names each field and its rule, as every other refusal does."""

    def post(method: str, name: str, params: dict[str, object]) -> httpx2.Response:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {server.admin_token}",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
            **({"Mcp-Name": name} if name else {}),
        }
        body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {**params, "_meta": META}}
        return httpx2.post(server.mcp_url, json=body, headers=headers)

    listed = post("tools/call", "list_agents", {"name": "list_agents", "arguments": ["a", "b"]})
    assert listed.status_code == 400
    assert listed.json()["error"] == {
        "code": -32602,
        "message": (
            "[invalid_input] tools/call: arguments: Input should be a valid dictionary (got ['a', 'b'])"
        ),
        "data": {"code": "invalid_input", "field": "arguments", "rule": "Input should be a valid dictionary"},
    }
    cursor = post("resources/list", "", {"cursor": 5})
    assert cursor.json()["error"]["message"] == (
        "[invalid_input] resources/list: cursor: Input should be a valid string (got 5)"
    )
    assert cursor.json()["error"]["data"]["field"] == "cursor"
    for listing in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        made_up = post(listing, "", {"cursor": "zzz"}).json()["error"]  # (these lists come whole)
        assert made_up["code"] == -32602, made_up
        assert made_up["message"].startswith("[invalid_input] cursor: not a cursor this server returned")
        assert made_up["data"]["field"] == "cursor"
    long_uri = "vibe://projects/" + "a" * 5000
    unread = post("resources/read", long_uri, {"uri": long_uri})
    assert (
        unread.json()["error"]["message"]
        == "[invalid_input] project: must be at most 64 characters (got 5000)"
    )
    assert len(unread.content) < 500  # the name is not echoed back
    made_up_method = post("x" * 5000, "", {})
    assert made_up_method.json()["error"] == {
        "code": -32601,
        "message": "Method not found",
        "data": "x" * 80 + "…",  # cut, as a tool's name is: it was echoed whole
    }
    nowhere = post("resources/read", "vibe://nothing", {"uri": "vibe://nothing"}).json()["error"]
    assert nowhere["code"] == -32602
    assert nowhere["message"].startswith("[invalid_input] uri: no resource at 'vibe://nothing'; must be one")
    assert "vibe://projects/{project}/issues/{id}" in nowhere["message"]
    assert (nowhere["data"]["code"], nowhere["data"]["field"]) == ("invalid_input", "uri")
    nameless = post("prompts/get", "", {}).json()["error"]
    assert nameless["message"] == (
        "[invalid_input] name: required: the prompt's name, one of coordinator_briefing, worker_briefing"
    )


async def test_a_malformed_envelope_is_refused_naming_the_rule_not_with_pydantic_s_dump(
    server: ServerProcess,
) -> None:
    """An older-protocol request the SDK cannot read as one JSON-RPC message (a batch, `null`, a method
    that is not a string): JSON-RPC's -32600 naming the rule, nothing internal; not JSON: -32700."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {server.admin_token}",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-03-26",
    }
    for body in (
        '[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
        "null",
        '{"jsonrpc":"2.0","id":1,"method":42}',
    ):
        refused = httpx2.post(server.mcp_url, content=body, headers=headers)
        assert refused.status_code == 400, body
        error = refused.json()["error"]
        assert error["code"] == -32600 and error["message"].startswith(
            "[invalid_request] the body must be one"
        )
        assert "a batch (an array) is not accepted" in error["message"]
        assert error["data"]["field"] == "body"
        assert "pydantic" not in refused.text and "JSONRPCRequest" not in refused.text, body
    # Not JSON at all: JSON-RPC's parse error.
    for version in ("2025-03-26", "2026-07-28"):
        garbled = httpx2.post(
            server.mcp_url, content="nope", headers={**headers, "MCP-Protocol-Version": version}
        )
        assert garbled.status_code == 400, version
        error = garbled.json()["error"]
        assert error["code"] == -32700 and error["message"].startswith("Parse error"), (version, error)
        assert "Traceback" not in garbled.text
    text = httpx2.post(server.mcp_url, content="{}", headers={**headers, "Content-Type": "text/plain"})
    assert text.status_code == 400 and text.headers["content-type"] == "application/json"
    assert text.json()["error"]["data"] == {
        "code": "invalid_request",
        "field": "content-type",
        "rule": "the body must be JSON, sent with Content-Type: application/json",
    }


async def test_a_request_whose_id_is_not_a_string_or_an_integer_is_refused_naming_it(
    server: ServerProcess,
) -> None:
    """The SDK took such a request for a notification (202, no answer) in the older era, and said
    only that the body was not a request in the 2026 era: both name `id`, and nothing runs."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {server.admin_token}",
        "Content-Type": "application/json",
    }
    create = {"name": "create_issue", "arguments": {"title": "never made"}}
    for version, params in (("2025-11-25", create), ("2026-07-28", {**create, "_meta": META})):
        era = {"MCP-Protocol-Version": version, "Mcp-Method": "tools/call", "Mcp-Name": "create_issue"}
        for bad in (None, 1.5, True, {"a": 1}, [1]):
            body = {"jsonrpc": "2.0", "id": bad, "method": "tools/call", "params": params}
            refused = httpx2.post(server.mcp_url, json=body, headers={**headers, **era})
            assert refused.status_code == 400, (version, bad, refused.text)
            answer = refused.json()
            assert answer["id"] is None and answer["error"]["code"] == -32600, (version, bad)
            assert answer["error"]["data"] == {
                "code": "invalid_request",
                "field": "id",
                "rule": "a request's id must be a string or an integer (JSON-RPC 2.0, MCP); "
                "a notification has none",
            }
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    legacy = {**headers, "MCP-Protocol-Version": "2025-11-25"}
    assert httpx2.post(server.mcp_url, json=notification, headers=legacy).status_code == 202
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        assert (await call(client, "list_issues"))["items"] == []  # nothing ran


async def test_a_protocol_version_the_server_does_not_speak_is_named_with_those_it_does(
    server: ServerProcess,
) -> None:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {server.admin_token}",
        "Content-Type": "application/json",
    }
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}
    for version in ("1999-01-01", "x" * 500):
        refused = httpx2.post(server.mcp_url, json=body, headers={**headers, "MCP-Protocol-Version": version})
        assert refused.status_code == 400
        answer = refused.json()
        assert answer["id"] == 3 and answer["error"]["code"] == -32022
        assert answer["error"]["message"].startswith(
            f"[unsupported_protocol_version] MCP-Protocol-Version {version[:40]!r} is not one this server "
            "speaks: 2026-07-28 (each request carries its version in params._meta), or "
        )
        assert "2025-11-25 after initialize" in answer["error"]["message"]
        assert answer["error"]["data"]["requested"] == version[:40]
        assert "2026-07-28" in answer["error"]["data"]["supported"]
    spoken = httpx2.post(server.mcp_url, json=body, headers={**headers, "MCP-Protocol-Version": "2025-11-25"})
    assert spoken.status_code == 200 and spoken.json()["result"]["tools"]


async def test_the_2026_era_s_own_refusals_are_said_as_every_other(server: ServerProcess) -> None:
    """On 2026-07-28 the SDK checks a request's envelope, routing headers and version before any
    handler runs, and said so in its own words: `params._meta must be an object…` with no `[code]`
    and no data, `mcp-method header does not match…`, -32022 `Unsupported protocol version` listing
    one version. Each is now `[code] rule` with `data` {code, field, rule} (docs/user-guide.md#errors)."""
    pv, caps = "io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientCapabilities"
    meta = {pv: "2026-07-28", caps: {}, "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}
    base = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {server.admin_token}",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/list",
    }

    def error(body: object, **headers: str | None) -> dict[str, Any]:
        sent = {k: v for k, v in {**base, **headers}.items() if v is not None}
        answer = httpx2.post(server.mcp_url, content=json.dumps(body), headers=sent)
        assert answer.status_code == 400, answer.text
        found: dict[str, Any] = answer.json()["error"]
        assert found["message"].startswith("["), found
        return found

    no_meta = error({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert no_meta["code"] == -32602
    assert no_meta["message"].startswith("[invalid_input] params._meta: must be an object holding")
    assert no_meta["data"]["code"] == "invalid_input" and no_meta["data"]["field"] == "params._meta"
    short = error(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {pv: "2026-07-28"}}}
    )
    assert short["code"] == -32602 and short["message"].endswith(f"(missing: {caps})")

    listed = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": meta}}
    for headers, field in (
        ({"Mcp-Method": None}, "Mcp-Method"),
        ({"Mcp-Method": "ping"}, "Mcp-Method"),
    ):
        mismatch = error(listed, **headers)
        assert mismatch["code"] == -32020, mismatch  # the protocol's code, kept
        assert mismatch["data"] == {
            "code": "invalid_request",
            "field": field,
            "rule": "the Mcp-Method header must be sent, equal to the request's method",
        }
        assert mismatch["message"] == f"[invalid_request] {mismatch['data']['rule']}"
    call = {
        "jsonrpc": "2.0",
        "id": 4,
        "method": "tools/call",
        "params": {"_meta": meta, "name": "list_agents"},
    }
    assert error(call, **{"Mcp-Method": "tools/call"})["data"]["field"] == "Mcp-Name"

    later = {**listed, "params": {"_meta": {**meta, pv: "2027-01-01"}}}
    unspoken = error(later, **{"MCP-Protocol-Version": "2027-01-01"})
    assert unspoken["code"] == -32022
    assert unspoken["message"].startswith(
        "[unsupported_protocol_version] MCP-Protocol-Version '2027-01-01' is not one this server speaks"
    )
    assert "2025-11-25" in unspoken["data"]["supported"] and "2026-07-28" in unspoken["data"]["supported"]
    legacy = error(
        {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, **{"MCP-Protocol-Version": "1999-01-01"}
    )
    assert legacy["data"]["supported"] == unspoken["data"]["supported"]  # one list, whichever era's shape

    for body in ([listed], None, {**listed, "params": "x"}):  # no single request: as in the older era
        envelope = error(body)
        assert envelope["code"] == -32600 and envelope["data"]["field"] == "body", body
        assert envelope["message"].startswith("[invalid_request] the body must be one JSON-RPC 2.0 message")


async def test_missing_or_invalid_bearer_token_is_401_json(server: ServerProcess) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    cases = {
        "none": {},
        "wrong scheme": {"Authorization": f"Basic {server.admin_token}"},
        "unknown token": {"Authorization": "Bearer vibe_" + "A" * 43},
        "not a token": {"Authorization": "Bearer hunter2"},
    }
    for case, auth in cases.items():
        response = httpx2.post(server.mcp_url, json=init, headers={**headers, **auth})
        assert response.status_code == 401, case
        assert response.headers["content-type"].startswith("application/json"), case
        # RFC 6750 §3.1: a request that sent no credentials is not told of an error code.
        presented = case not in ("none", "wrong scheme")  # no bearer token at all
        challenge = 'Bearer realm="vibe-ensemble"' + (', error="invalid_token"' if presented else "")
        assert response.headers["www-authenticate"] == challenge, case
        # A JSON-RPC error, which is what an MCP client reads at a 4xx: the code in `data` as REST's.
        answer = response.json()
        assert answer["jsonrpc"] == "2.0" and answer["id"] is None, case
        assert answer["error"]["code"] == -32000 and answer["error"]["data"]["code"] == "unauthenticated", (
            case
        )
        assert answer["error"]["message"].startswith("[unauthenticated] "), case
        assert "vibe-ensemble token create" in answer["error"]["message"], case
    # The official client shows the agent why (it showed "Server returned an error response").
    for token in ("vibe_" + "B" * 43, "hunter2"):
        with pytest.raises(BaseException) as refused:
            async with mcp_client(server.mcp_url, token) as client:
                await client.list_tools()
        error = mcp_error(refused.value)
        assert error.error.code == -32000, error
        assert error.error.message.startswith("[unauthenticated] ") and "token create" in error.error.message


async def test_an_mcp_url_with_a_wrong_path_says_where_the_endpoint_is(server: ServerProcess) -> None:
    """`/mcp/` (a trailing slash) or `/api/v1/mcp`: the official client showed "Not Found" only."""
    for path in ("/mcp/", "/api/v1/mcp"):
        with pytest.raises(BaseException) as refused:  # the SDK's task group wraps it
            async with mcp_client(server.url + path, server.admin_token) as client:
                await client.list_tools()
        error = mcp_error(refused.value)
        assert error.error.message.startswith("[not_found] no MCP endpoint at this path"), (path, error)
        assert "ends in /mcp, with no trailing slash" in error.error.message
        assert f"(here: {server.mcp_url})" in error.error.message  # this server's, on its own port
    other = httpx2.get(
        server.url + "/api/v1/nothing", headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"  # REST's as before


async def test_null_for_an_optional_argument_is_its_default_whatever_its_type(server: ServerProcess) -> None:
    """A client that fills every optional argument with null: `title: null` was taken as omitted,
    `timeout_s: null` and `limit: null` refused. Each is now its default; a required one is not."""
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        await call(client, "register_agent", name="nul", role="worker")
        inbox = await call(client, "fetch_inbox", agent="nul", limit=None, unread_only=None)
        assert inbox["items"] == []
        waited = await call(client, "wait_for_messages", agent="nul", timeout_s=0, limit=None, since_id=None)
        assert waited["items"] == []
        made = await call(client, "create_issue", title="nulls", agent="nul", priority=None, depends_on=None)
        assert made["priority"] == "p2"
        refused = await client.call_tool("create_issue", {"title": None, "agent": "nul"})
        assert refused.is_error and "title" in refused.content[0].text  # type: ignore[union-attr]


async def test_a_wait_of_nan_or_infinite_seconds_is_refused_as_such(server: ServerProcess) -> None:
    """`NaN` (which Python's JSON reads) compares false with every bound, so it was refused as
    'less than or equal to 60'. (The SDK client cannot send it: it writes NaN as null.)"""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {server.admin_token}",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "wait_for_messages",
    }
    for value in ("NaN", "Infinity"):
        body = (
            '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "wait_for_messages", '
            f'"arguments": {{"agent": "nan", "timeout_s": {value}}}, "_meta": {json.dumps(META)}}}}}'
        )
        answer = httpx2.post(server.mcp_url, content=body, headers=headers, timeout=10).json()
        text = answer["result"]["content"][0]["text"]
        assert "timeout_s: Input should be a finite number" in text, (value, text)
    token = {"Authorization": f"Bearer {server.admin_token}"}
    rest = httpx2.get(
        server.url + "/api/v1/projects/default/agents/nan/inbox/wait?timeout_s=nan", headers=token
    )
    assert rest.status_code == 422 and "finite" in rest.text, rest.text


async def test_an_update_of_nulls_only_says_how_to_clear_a_field(server: ServerProcess) -> None:
    """`update_issue(assignee=null)` meant "unassign" to the agent and "not given" to the server: it
    is refused saying how to unassign (it said only "nothing to change")."""
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        await call(client, "register_agent", name="upd", role="worker")
        made = await call(client, "create_issue", title="to update", agent="upd")
        refused = await client.call_tool("update_issue", {"id": made["id"], "assignee": None, "agent": "upd"})
        assert refused.is_error
        text = refused.content[0].text  # type: ignore[union-attr]
        assert "[invalid_input]" in text and "assignee '' unassigns" in text, text


async def test_text_that_is_not_unicode_is_refused_naming_the_field(server: ServerProcess) -> None:
    """JSON can carry a lone surrogate (`\\ud800`), which no Unicode text holds: a tool's argument
    with one is refused naming the argument (it was an internal error, a traceback in the log), a
    prompt's or a resource's likewise, and nothing is written."""
    meta = (
        '{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        '"io.modelcontextprotocol/clientInfo":{"name":"test","version":"0"},'
        '"io.modelcontextprotocol/clientCapabilities":{}}'
    )

    def post(method: str, name: str, params: str) -> dict[str, Any]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {server.admin_token}",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
            "Mcp-Name": name,
        }
        body = f'{{"jsonrpc":"2.0","id":3,"method":"{method}","params":{{{params},"_meta":{meta}}}}}'
        answer = httpx2.post(server.mcp_url, content=body.encode(), headers=headers)
        assert answer.status_code in (200, 400), answer.text
        result: dict[str, Any] = answer.json()
        return result

    def tool(arguments: str) -> str:
        params = f'"name":"create_issue","arguments":{arguments}'
        result = post("tools/call", "create_issue", params)["result"]
        assert result["isError"] is True
        text: str = result["content"][0]["text"]
        return text

    assert tool('{"title":"x\\ud800"}') == (
        "[invalid_input] create_issue: title: must be valid Unicode text (no lone surrogates such as "
        '\\ud800) {"field": "title", "rule": "must be valid Unicode text (no lone surrogates such as '
        '\\\\ud800)"}'
    )
    assert tool('{"title":"ok","labels":["a","\\udfff"]}').startswith(
        "[invalid_input] create_issue: labels[1]: must be valid Unicode text"
    )
    assert tool('{"title":"ok","x\\ud800":1}').startswith("[invalid_input] create_issue: unknown argument")
    briefing = '"name":"worker_briefing","arguments":{"agent":"a\\ud800"}'
    prompt = post("prompts/get", "worker_briefing", briefing)
    assert prompt["error"]["message"].startswith("[invalid_input]"), prompt
    # (no header can carry the URI's surrogate, so the SDK's check that Mcp-Name is the URI refuses it)
    read = post("resources/read", "vibe://projects/d", '"uri":"vibe://projects/d\\ud800"')
    assert read["error"]["code"] != -32603, read  # not an internal error
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        assert (await call(client, "list_issues"))["items"] == []


async def test_an_answer_carries_text_beyond_ascii_as_utf8_and_reads_back_whole(
    server: ServerProcess,
) -> None:
    """Answers are written by pydantic-core's encoder (api/mcp/wire_json.py): text beyond ASCII goes
    as UTF-8, not as `\\uXXXX` escapes, and reads back the same, through the official client too."""
    description = 'café ☕ naïve — 漢字 "quoted" \\ </script>'
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {server.admin_token}",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "register_agent",
    }
    arguments = {"name": "utf8-writer", "description": description}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "register_agent", "arguments": arguments, "_meta": META},
    }
    answer = httpx2.post(server.mcp_url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert "café ☕ naïve — 漢字".encode() in answer.content
    assert b"\\u00e9" not in answer.content
    result = answer.json()["result"]
    assert result["structuredContent"]["description"] == description
    assert json.loads(result["content"][0]["text"])["description"] == description
    async with mcp_client(server.mcp_url, server.admin_token) as client:
        listed = await call(client, "list_agents")
        assert [a["description"] for a in listed if a["name"] == "utf8-writer"] == [description]
