"""The baseline: a bare server on the same MCP SDK and transport, with tools that return constants.

    python bench/bare_server.py PORT
    python bench/bare_server.py PORT ANSWERS.json     # the shaped server: answers as ours did

It serves `/mcp` exactly as Vibe Ensemble does (Streamable HTTP, stateless, JSON responses,
uvicorn, logging at WARNING), with tools named like ours so the load loop is the same. Whatever
our server costs beyond this is our own work. uvicorn picks httptools and uvloop when they are
installed, as they are beside ours, so both servers parse HTTP and run their loop alike (`serve`
uses the same two: cli/http_protocol.py, cli/common.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server import MCPServer
from mcp_types import CallToolResult
from starlette.applications import Starlette


def build() -> MCPServer:
    mcp = MCPServer("bare", log_level="WARNING")

    @mcp.tool()
    async def register_agent(name: str = "", role: str = "worker") -> dict[str, Any]:
        """Register (a constant)."""
        return {"name": name, "role": role}

    @mcp.tool()
    async def send_message(to: list[str], subject: str, body: str) -> dict[str, Any]:
        """Send (a constant)."""
        return {"id": 1, "subject": subject}

    @mcp.tool()
    async def fetch_inbox(limit: int = 20, unread_only: bool = False) -> dict[str, Any]:
        """Fetch (a constant)."""
        return {"messages": [], "unread": 0}

    return mcp


def build_shaped(answers: dict[str, dict[str, Any]]) -> MCPServer:
    """The bare server answering each tool with a recorded result of ours (`answers`: tool name →
    the JSON-RPC `result` our server sent): the SDK's cost for our payloads, with none of our work."""
    mcp = MCPServer("shaped", log_level="WARNING")
    send = CallToolResult.model_validate(answers["send_message"])
    inbox = CallToolResult.model_validate(answers["fetch_inbox"])

    @mcp.tool()
    async def register_agent(name: str = "", role: str = "worker") -> dict[str, Any]:
        """Register (a constant)."""
        return {"name": name, "role": role}

    @mcp.tool()
    async def send_message(to: list[str], subject: str, body: str) -> CallToolResult:
        """Send (our recorded answer)."""
        return send

    @mcp.tool()
    async def fetch_inbox(limit: int = 20, unread_only: bool = False) -> CallToolResult:
        """Fetch (our recorded answer)."""
        return inbox

    return mcp


def asgi(server: MCPServer) -> Starlette:
    """The server's `/mcp` app, as Vibe Ensemble serves its own: stateless, JSON answers."""
    return server.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host="127.0.0.1"
    )


def main() -> None:
    port = int(sys.argv[1])
    # With a file of our answers (tool name -> the JSON-RPC `result`), the shaped server (bench/swarm.py).
    server = build_shaped(json.loads(Path(sys.argv[2]).read_text())) if len(sys.argv) > 2 else build()
    uvicorn.run(asgi(server), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
