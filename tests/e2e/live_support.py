"""Helpers for the live-feed end-to-end tests: SSE frames, WebSocket messages, REST set-up, metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect

from ..support import tls


@dataclass
class Frame:
    """One Server-Sent Events frame (or a run of comments)."""

    id: int | None = None
    event: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(text: str) -> list[Frame]:
    """Frames from raw `text/event-stream` text (whole frames only)."""
    frames: list[Frame] = []
    current = Frame()
    for line in text.split("\n"):
        if line == "":
            if current != Frame():
                frames.append(current)
            current = Frame()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(": ")
            if name == "id":
                current.id = int(value)
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data = value
    return frames


async def sse_frames(response: httpx2.Response) -> AsyncIterator[Frame]:
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line:
            lines.append(line)
            continue
        for frame in parse_sse("\n".join(lines) + "\n\n"):
            yield frame
        lines = []


async def next_events(frames: AsyncIterator[Frame], count: int) -> list[Frame]:
    """The next `count` event frames (skipping comments and other frames)."""
    got: list[Frame] = []
    async for frame in frames:
        if frame.id is not None:
            got.append(frame)
            if len(got) == count:
                break
    return got


def ws_url(base: str, **query: Any) -> str:
    params = httpx2.QueryParams({k: v for k, v in query.items() if v is not None})
    return base.replace("http://", "ws://") + "/api/v1/events/ws" + (f"?{params}" if params else "")


def ws_connect(base: str, token: str | None, **query: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(ws_url(base, **query), additional_headers=headers, open_timeout=10)


async def ws_events_until(ws: ClientConnection, last_id: int) -> list[dict[str, Any]]:
    """Event messages from a WebSocket until event `last_id` has arrived."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["id"] < last_id:
        message = json.loads(await ws.recv())
        if message["type"] == "event":
            got.append(message["event"])
    return got


def rest(base: str, token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=base + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=tls()
    )


async def token(
    admin: httpx2.AsyncClient, role: str, project: str | None = None, agent: str | None = None
) -> str:
    response = await admin.post("/tokens", json={"role": role, "project": project, "agent": agent})
    assert response.status_code == 201, response.text
    secret: str = response.json()["token"]
    return secret


async def latest_id(client: httpx2.AsyncClient) -> int:
    """The newest event id (paging through the log)."""
    after = 0
    while True:
        page = (await client.get("/events", params={"after": after, "limit": 1000})).json()
        if not page["items"]:
            return after
        after = page["last_id"]


async def log_after(client: httpx2.AsyncClient, after: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = (await client.get("/events", params={"after": after, "limit": 1000, **params})).json()
        if not page["items"]:
            return items
        items += page["items"]
        after = page["last_id"]


def metric(base: str, name: str, **labels: str) -> float:
    """A sample from the server's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx2.get(base + "/metrics", timeout=5, verify=tls()).text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


# What a client of the 2026 era sends in each request's `_meta` instead of a handshake.
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_request(
    token: str, method: str, params: dict[str, Any], *, name: str | None = None, request_id: int = 1
) -> tuple[dict[str, str], dict[str, Any]]:
    """A raw MCP request of the 2026 era, as (headers, body): the version in `_meta` and in the
    header, and the `Mcp-Method` (and `Mcp-Name`) headers the endpoint routes by."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
        **({"Mcp-Name": name} if name else {}),
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": MODERN_META}}
    return headers, body


def listen_request(token: str, request_id: int = 1) -> tuple[dict[str, str], dict[str, Any]]:
    """A `subscriptions/listen` on the default project's board, as (headers, body)."""
    board = {"notifications": {"resourceSubscriptions": ["vibe://projects/default/board"]}}
    return modern_request(token, "subscriptions/listen", board, request_id=request_id)
