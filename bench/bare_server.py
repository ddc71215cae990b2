"""The baseline: a bare server on the same MCP SDK and transport, with tools that return constants.

    python bench/bare_server.py PORT

It serves `/mcp` exactly as Vibe Ensemble does (Streamable HTTP, stateless, JSON responses,
uvicorn, logging at WARNING), with tools named like ours so the load loop is the same. Whatever
our server costs beyond this is our own work.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from mcp.server import MCPServer


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


def main() -> None:
    port = int(sys.argv[1])
    app = build().streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host="127.0.0.1"
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
