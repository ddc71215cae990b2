"""The generic MCP methods, with the official SDK client against a real server (HTTP) and stdio:
logging/setLevel, completion/complete, resources/list, resources/subscribe, compact results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.support import ServerProcess, call, mcp_client

from .live_support import modern_request

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))
ISSUE = types.ResourceTemplateReference(uri="vibe://projects/{project}/issues/{id}")
NOT_HONORED = "vibe-ensemble/notHonored"
INBOX = types.ResourceTemplateReference(uri="vibe://projects/{project}/agents/{agent}/inbox")
BRIEFING = types.PromptReference(name="worker_briefing")

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def token_create(db: str, *args: str) -> str:
    argv = [CLI, "token", "create", *args, "--database-url", db]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.strip()


async def complete(client: Client, ref: Any, name: str, value: str, **known: str) -> list[str]:
    result = await client.complete(ref, {"name": name, "value": value}, known or None)
    return list(result.completion.values)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_completions_resources_and_results(server: ServerProcess, mode: str) -> None:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    rest = httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"})
    assert rest.post("/api/v1/projects", json={"slug": "docs", "name": "Docs"}).status_code == 201
    async with mcp_client(server.mcp_url, server.admin_token, mode=mode) as admin:
        for name in ("dana", "dave", "erin"):
            await call(admin, "register_agent", name=name)
        await call(admin, "register_agent", name="carl", role="coordinator")
        ids = [(await call(admin, "create_issue", title=f"t{n}", agent="dana"))["id"] for n in range(12)]
        await call(admin, "register_agent", name="dana", project="docs")
        other = await call(admin, "create_issue", title="elsewhere", project="docs", agent="dana")

        # completions: prompt arguments and resource-template arguments, by prefix
        assert await complete(admin, BRIEFING, "project", "d") == ["default", "docs"]
        assert await complete(admin, BRIEFING, "agent", "da") == ["dana", "dave"]
        assert await complete(admin, ISSUE, "id", "1", project="default") == [
            str(i) for i in reversed(ids) if str(i).startswith("1")
        ]
        assert await complete(admin, ISSUE, "id", str(other["id"]), project="docs") == [str(other["id"])]
        assert await complete(admin, ISSUE, "id", "", project="nope") == []  # unknown project: nothing
        # a prompt, template or argument this server has not: invalid params naming it, not nothing
        nope = types.ResourceTemplateReference(uri="vibe://nope/{id}")
        takes = "it takes: agent, project"
        refusals: list[tuple[Any, str, dict[str, str], str]] = [
            (
                types.PromptReference(name="nope"),
                "agent",
                {},
                "ref.name: unknown prompt 'nope'; not a prompt of this server; the prompts are: "
                "coordinator_briefing, worker_briefing",
            ),
            (BRIEFING, "bogus", {}, f"argument.name: 'bogus' is not an argument of worker_briefing; {takes}"),
            (
                BRIEFING,
                "agent",
                {"bogus": "x"},
                f"context.arguments: 'bogus' is not an argument of worker_briefing; {takes}",
            ),
            (
                ISSUE,
                "agent",
                {},
                "argument.name: 'agent' is not an argument of vibe://projects/{project}/issues/{id}; "
                "it takes: project, id",
            ),
            (
                nope,
                "id",
                {},
                "ref.uri: unknown resource template 'vibe://nope/{id}'; not a resource template of this "
                "server; the templates are: vibe://projects{?limit}, vibe://projects/{project}, ",
            ),
        ]
        for ref, name, known, message in refusals:
            with pytest.raises(MCPError) as refused:
                await complete(admin, ref, name, "", **known)
            assert refused.value.error.code == types.INVALID_PARAMS, message
            assert refused.value.error.message.startswith(f"[invalid_input] {message}")
            assert refused.value.error.data["field"] == message.split(":")[0]

        # tool results: compact JSON text, the same value as the structured copy
        result = await admin.call_tool("get_issue", {"id": ids[0]})
        text = result.content[0].text  # type: ignore[union-attr]
        assert "\n" not in text and ": " not in text
        assert json.loads(text) == result.structured_content

        # prompt descriptions without the docstrings' indentation
        for prompt in (await admin.list_prompts()).prompts:
            assert prompt.description and not any(
                line.startswith(" ") for line in prompt.description.splitlines()
            )

        # resources/list: the concrete resources of the caller's project, each readable
        listed = [r.uri for r in (await admin.list_resources()).resources]
        assert listed == [
            "vibe://projects",
            "vibe://projects/default",
            "vibe://projects/default/board",
            "vibe://projects/default/ready",
        ]
        ready = json.loads((await admin.read_resource(listed[3])).contents[0].text)  # type: ignore[union-attr]
        assert {i["id"] for i in ready} == set(ids)

        if mode == "legacy":
            await admin.set_logging_level("debug")  # accepted
            # stateless HTTP carries no notification: resources/subscribe is neither offered nor served
            caps = admin.session.initialize_result.capabilities  # type: ignore[union-attr]
            assert caps.resources is not None and not caps.resources.subscribe
            with pytest.raises(MCPError, match="Method not found"):
                await admin.subscribe_resource("vibe://projects/default/board")
        else:  # removed at 2026-07-28: subscriptions/listen replaces both
            with pytest.raises(MCPError, match="Method not found"):
                await admin.set_logging_level("debug")

    # a token scoped to a project completes and lists only what it can read: its project; bound to an
    # agent, that agent's inbox and briefing only (another's is permission_denied)
    erin = token_create(db, "--role", "worker", "--project", "default", "--agent", "erin")
    async with mcp_client(server.mcp_url, erin, mode=mode) as worker:
        assert await complete(worker, BRIEFING, "project", "d") == ["default"]
        assert await complete(worker, INBOX, "project", "") == ["default"]
        assert await complete(worker, ISSUE, "id", str(other["id"]), project="docs") == []
        assert await complete(worker, INBOX, "agent", "") == ["erin"]
        assert await complete(worker, INBOX, "agent", "", project="default") == ["erin"]
        assert await complete(worker, INBOX, "agent", "d") == []
        assert await complete(worker, BRIEFING, "agent", "") == ["erin"]
        with pytest.raises(MCPError, match="permission_denied"):
            await worker.read_resource("vibe://projects/default/agents/dana/inbox")
        listed = [r.uri for r in (await worker.list_resources()).resources]
        assert listed[-1] == "vibe://projects/default/agents/erin/inbox"
        await call(worker, "send_message", to=["erin"], subject="hi", body="to myself")
        inbox = json.loads((await worker.read_resource(listed[-1])).contents[0].text)  # type: ignore[union-attr]
        assert [m["message"]["subject"] for m in inbox["items"]] == ["hi"]
    # a worker team token acts for the workers, not as the coordinator: it completes those it may read
    team = token_create(db, "--role", "worker", "--project", "default")
    async with mcp_client(server.mcp_url, team, mode=mode) as worker:
        assert await complete(worker, INBOX, "agent", "") == ["dana", "dave", "erin"]
        assert await complete(worker, BRIEFING, "agent", "") == ["dana", "dave", "erin"]
        with pytest.raises(MCPError, match="permission_denied"):
            await worker.read_resource("vibe://projects/default/agents/carl/inbox")
    async with mcp_client(server.mcp_url, server.admin_token, mode=mode) as admin:
        assert await complete(admin, INBOX, "agent", "") == ["carl", "dana", "dave", "erin"]


ONCE = "a query parameter of a vibe:// URI is given at most once"


async def test_a_listen_honors_only_what_is_pushed_and_says_why_not_the_rest(server: ServerProcess) -> None:
    """The inbox is never pushed (mail is waited for): a listen does not list it as honored, and its
    acknowledgement's `_meta` says why; so for a query, an id no resource has, another project's URI
    (a scoped token), and the tool and prompt lists (which never change)."""
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    alice = token_create(db, "--role", "worker", "--project", "default", "--agent", "alice")
    base = "vibe://projects/default"
    wanted = [
        f"{base}/board",
        f"{base}/agents/alice/inbox",
        "vibe://projects?limit=1",
        f"{base}/issues/01",
        "vibe://projects/other/board",
        f"{base}/issues/7",
        "vibe://nope",
    ]
    async with (
        mcp_client(server.mcp_url, alice) as client,
        client.listen(
            tools_list_changed=True, prompts_list_changed=True, resources_list_changed=True,
            resource_subscriptions=wanted,
        ) as subscription,
    ):  # fmt: skip
        honored = subscription.honored
        assert honored is not None
        assert honored.resource_subscriptions == [f"{base}/board", f"{base}/issues/7"]
        assert honored.resources_list_changed is True
        assert not honored.tools_list_changed and not honored.prompts_list_changed

    # what the SDK's client keeps to itself: the acknowledgement, read off the wire
    headers, body = modern_request(
        alice,
        "subscriptions/listen",
        {"notifications": {"toolsListChanged": True, "resourceSubscriptions": wanted}},
    )
    async with httpx2.AsyncClient(timeout=10) as http, http.stream(
        "POST", server.mcp_url, headers=headers, json=body
    ) as stream:  # fmt: skip
        assert stream.status_code == 200
        ack = await anext(
            json.loads(line[6:]) async for line in stream.aiter_lines() if line.startswith("data: ")
        )
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"resourceSubscriptions": [f"{base}/board", f"{base}/issues/7"]}
    reasons = {n.get("uri") or n["notification"]: n["reason"] for n in ack["params"]["_meta"][NOT_HONORED]}
    assert set(reasons) == {"toolsListChanged", *wanted} - {f"{base}/board", f"{base}/issues/7"}
    assert "wait_for_messages" in reasons[f"{base}/agents/alice/inbox"]
    assert "without a query" in reasons["vibe://projects?limit=1"]
    assert "leading zero" in reasons[f"{base}/issues/01"]
    assert reasons["vibe://projects/other/board"] == "not a resource of this token's project (default)"
    assert reasons["vibe://nope"].startswith("not a resource of this server")
    assert "tool profile" in reasons["toolsListChanged"]


async def test_a_resource_has_one_uri(server: ServerProcess) -> None:
    """An id is ASCII digits without a leading zero (`issues/01` and `issues/٣`, Arabic-Indic digits,
    read issue 1 and 3), and only vibe://projects takes a query, `limit` once (other parameters, and
    a second `limit`, were ignored without a word)."""
    async with mcp_client(server.mcp_url, server.admin_token) as admin:
        await call(admin, "register_agent", name="uri-a")
        made = await call(admin, "create_issue", title="one uri", agent="uri-a")
        base = "vibe://projects/default"
        issue = (await admin.read_resource(f"{base}/issues/{made['id']}")).contents[0]
        assert "one uri" in issue.text  # type: ignore[union-attr]
        assert len(json.loads((await admin.read_resource("vibe://projects?limit=1")).contents[0].text)) == 1  # type: ignore[union-attr]
        refused = {
            f"{base}/issues/0{made['id']}": "id: must be a whole number",
            f"{base}/issues/{chr(0x0660 + made['id'] % 10)}": "id: must be a whole number",
            "vibe://projects?x=1": "uri: vibe://projects takes only the query parameter limit (got 'x')",
            "vibe://projects?limit=1&limit=2": f"uri: {ONCE}",
            f"{base}/board?limit=1": "uri: vibe://projects/{project}/board takes no query",
        }
        for uri, says in refused.items():
            with pytest.raises(MCPError) as exc:
                await admin.read_resource(uri)
            assert exc.value.error.code == -32602 and says in exc.value.error.message, (uri, exc.value.error)


async def test_resources_subscribe_pushes_changes_on_stdio(tmp_path: Path) -> None:
    """An older-protocol stdio client subscribes to the board and hears when an issue changes it."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'stdio.db'}"
    subprocess.run([CLI, "migrate", "--database-url", db], capture_output=True, timeout=60, check=True)
    token = token_create(db, "--role", "coordinator", "--project", "default")
    updated: list[str] = []
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            heard.set()

    params = StdioServerParameters(
        command=CLI, args=["mcp", "--database-url", db], env={**os.environ, "VIBE_TOKEN": token}, cwd=tmp_path
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        async with Client(params, mode="legacy", message_handler=on_message) as client:
            caps = client.session.initialize_result.capabilities  # type: ignore[union-attr]
            assert caps.resources and caps.resources.subscribe and caps.completions and caps.logging
            with pytest.raises(MCPError, match="not a vibe:// resource of this token's project"):
                await client.subscribe_resource("vibe://projects/other/board")
            with pytest.raises(MCPError, match=r"uri: an inbox's changes are not pushed: wait for mail"):
                await client.subscribe_resource("vibe://projects/default/agents/lead/inbox")
            await client.subscribe_resource("vibe://projects/default/board")
            await call(client, "register_agent", name="lead")
            with anyio.fail_after(20):
                await heard.wait()
            assert updated[0] == "vibe://projects/default/board"
            await client.unsubscribe_resource("vibe://projects/default/board")
