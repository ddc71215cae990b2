"""The foundation's scenario: a coordinator plans ten issues as a DAG, three workers drain it
concurrently over MCP while mail flows, and everything survives a server restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
from mcp import Client

from tests.support import ServerProcess, call, call_error, mcp_client

# issue index -> the indexes it depends on (a DAG with shared parents and a long chain)
PLAN: dict[int, list[int]] = {
    0: [],
    1: [],
    2: [0],
    3: [0, 1],
    4: [2],
    5: [2, 3],
    6: [1],
    7: [4, 5, 6],
    8: [7],
    9: [3, 8],
}
PRIORITIES = ["p1", "p2", "p0", "p3", "p2", "p1", "p3", "p0", "p2", "p1"]
WORKERS = ["w1", "w2", "w3"]
DEADLINE_S = 60.0


def rest(server: ServerProcess, token: str) -> httpx2.Client:
    return httpx2.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def make_token(admin: httpx2.Client, role: str, agent: str) -> str:
    made = admin.post(
        "/api/v1/tokens", json={"role": role, "project": "default", "agent": agent, "label": agent}
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    assert (body["role"], body["agent"], body["project"]) == (role, agent, "default")
    return str(body["token"])


async def poll(what: str, check: Any) -> Any:
    """Await `check()` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def inbox(client: Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await call(client, "fetch_inbox"))["items"]
    return items


async def done_count(client: Client) -> int:
    page = await call(client, "list_issues", status="done", limit=50)
    return len(page["items"])


async def work(server: ServerProcess, name: str, token: str, mode: str) -> list[int]:
    """A worker: register, answer the kickoff, then claim and close until everything is done."""
    closed: list[int] = []
    async with mcp_client(server.mcp_url, token, mode=mode) as client:
        me = await call(client, "register_agent", role="worker", program="pytest", model=mode)
        assert me["name"] == name  # the token is bound to this agent

        async def kickoff() -> dict[str, Any] | None:
            return next((i for i in await inbox(client) if i["message"]["subject"] == "kickoff"), None)

        item = await poll(f"{name} to get the kickoff", kickoff)
        message = item["message"]
        assert message["sender"] == "lead"
        assert message["broadcast"] and message["ack_required"]
        assert await call(client, "acknowledge_messages", ids=[message["id"]]) == [message["id"]]
        await call(
            client,
            "send_message",
            to=["lead"],
            subject="re: kickoff",
            body=f"{name} ready",
            thread_id=message["thread_id"],
        )

        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            result = await client.call_tool("claim_issue", {})
            if result.is_error:
                text = str(result.content[0].text)  # type: ignore[union-attr]
                assert "no issue is ready to claim" in text, text
                if await done_count(client) == len(PLAN):
                    break
                await asyncio.sleep(0.05)  # others hold the issues we wait on
                continue
            issue = result.structured_content
            assert issue is not None
            assert issue["assignee"] == name
            await call(client, "heartbeat", status="working", activity=f"on #{issue['id']}")
            await call(client, "comment_issue", id=issue["id"], body=f"{name} on it")
            finished = await call(client, "close_issue", id=issue["id"], resolution=f"done by {name}")
            assert finished["issue"]["status"] == "done"
            closed.append(issue["id"])
        else:
            raise AssertionError(f"{name} did not see all issues done in time")

        await call(
            client,
            "send_message",
            to=["lead"],
            subject="re: kickoff",
            body=f"{name} closed {closed}",
            thread_id=message["thread_id"],
        )
        # a bound worker token cannot speak for someone else
        denied = await call_error(client, "fetch_inbox", agent="lead")
        assert "[permission_denied]" in denied
    return closed


async def coordinate(server: ServerProcess, token: str) -> tuple[dict[int, int], str]:
    """The coordinator: plan the DAG, wait for the team, broadcast the kickoff. Returns index -> id."""
    async with mcp_client(server.mcp_url, token) as client:
        lead = await call(client, "register_agent", role="coordinator")
        assert (lead["name"], lead["role"]) == ("lead", "coordinator")
        ids: dict[int, int] = {}
        for index, deps in PLAN.items():
            issue = await call(
                client,
                "create_issue",
                title=f"step {index}",
                body=f"part {index} of the plan",
                priority=PRIORITIES[index],
                depends_on=[ids[d] for d in deps],
            )
            ids[index] = issue["id"]

        async def team_registered() -> bool:
            names = {a["name"] for a in await call(client, "list_agents", role="worker")}
            return names == set(WORKERS)

        await poll("the workers to register", team_registered)
        kickoff = await call(
            client,
            "send_message",
            broadcast=True,
            subject="kickoff",
            body="Claim ready issues until the board is empty.",
            importance="high",
            ack_required=True,
        )
        assert sorted(kickoff["recipients"]) == WORKERS
    return ids, str(kickoff["thread_id"])


def events(api: httpx2.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.get("/api/v1/events", params={"after": after, "limit": 200}).json()
        if not page["items"]:
            return out
        out += page["items"]
        after = page["last_id"]


async def test_coordinator_and_three_workers_drain_a_dag_and_survive_a_restart(server: ServerProcess) -> None:
    with rest(server, server.admin_token) as admin:
        lead_token = make_token(admin, "coordinator", "lead")
        worker_tokens = {name: make_token(admin, "worker", name) for name in WORKERS}

    modes = dict(zip(WORKERS, ["auto", "auto", "legacy"], strict=True))
    (ids, thread), crew = await asyncio.gather(
        coordinate(server, lead_token),
        asyncio.gather(*(work(server, name, worker_tokens[name], modes[name]) for name in WORKERS)),
    )
    closed_by = dict(zip(WORKERS, crew, strict=True))

    all_closed = [i for closed in closed_by.values() for i in closed]
    assert sorted(all_closed) == sorted(ids.values())  # every issue closed exactly once

    with rest(server, server.admin_token) as admin:
        log = events(admin)
        # the DAG was respected: nobody claimed an issue before all its dependencies were closed
        closed_at = {e["payload"]["id"]: e["id"] for e in log if e["type"] == "issue.closed"}
        claimed_at = {e["payload"]["id"]: e["id"] for e in log if e["type"] == "issue.claimed"}
        for index, deps in PLAN.items():
            for dep in deps:
                assert closed_at[ids[dep]] < claimed_at[ids[index]], (index, dep)
        ready_announced = {e["payload"]["id"] for e in log if e["type"] == "issue.ready"}
        assert ready_announced == set(ids.values())

        before = snapshot(admin)
        assert before["issues"] == len(PLAN)
        assert before["agents"] == [
            ("lead", "coordinator"),
            ("w1", "worker"),
            ("w2", "worker"),
            ("w3", "worker"),
        ]
        assert before["done"] == {i: f"done by {name}" for name, closed in closed_by.items() for i in closed}
        lead_mail = before["inboxes"]["lead"]
        assert len(lead_mail) == 2 * len(WORKERS)
        assert {m["thread"] for m in lead_mail} == {thread}
        assert {m["sender"] for m in lead_mail} == set(WORKERS)
        for name in WORKERS:
            kickoff = [m for m in before["inboxes"][name] if m["subject"] == "kickoff"]
            assert len(kickoff) == 1
            assert kickoff[0]["acked"]

    server.restart()

    with rest(server, server.admin_token) as admin:
        after = snapshot(admin)
        assert after == before
        assert events(admin) == log
        # the tokens still work, and new events follow the old ones
        async with mcp_client(server.mcp_url, worker_tokens["w1"]) as client:
            beat = await call(client, "heartbeat", status="idle")
            assert beat["agent"]["name"] == "w1"
            assert beat["assigned_issues"] == []
        async with mcp_client(server.mcp_url, lead_token) as client:
            mail = await call(client, "fetch_inbox", mark_read=True)
            assert len(mail["items"]) == 2 * len(WORKERS)
            assert mail["unread"] == 0
        now = events(admin)
        assert now[: len(log)] == log
        assert now[-1]["type"] == "message.read"
        assert now[-1]["id"] > log[-1]["id"]


def snapshot(admin: httpx2.Client) -> dict[str, Any]:
    """What a person would check: the board, everyone's mail, the team."""
    issues = admin.get("/api/v1/projects/default/issues", params={"limit": 100}).json()["items"]
    agents = admin.get("/api/v1/projects/default/agents").json()
    inboxes = {
        a["name"]: [
            {
                "id": i["message"]["id"],
                "sender": i["message"]["sender"],
                "subject": i["message"]["subject"],
                "thread": i["message"]["thread_id"],
                "acked": i["acked_at"] is not None,
            }
            for i in admin.get(f"/api/v1/projects/default/agents/{a['name']}/inbox").json()["items"]
        ]
        for a in agents
    }
    return {
        "done": {i["id"]: i["resolution"] for i in issues if i["status"] == "done"},
        "issues": len(issues),
        "agents": sorted((a["name"], a["role"]) for a in agents),
        "inboxes": inboxes,
    }
