"""How many MCP tool calls per second one client gets over HTTP, and at what latency.

    python bench/tool_calls.py                       # starts its own server on SQLite
    python bench/tool_calls.py --database-url postgresql+asyncpg://…/empty_db   # written to!
    python bench/tool_calls.py --url http://host:8080 --token vibe_…

One MCP client (the official SDK over Streamable HTTP) registers an agent and calls
`heartbeat` and then `list_issues` sequentially, `--calls` times each, after a short
warm-up. Figures are printed, never asserted. A server started here has rate limits
switched off, so the figures measure the server rather than the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from servers import own_servers  # bench/servers.py (the script's own folder)


@dataclass
class Figures:
    tool: str
    calls: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def row(self) -> str:
        return (
            f"{self.tool:<14}{self.calls:>7}{self.rate:>10.1f}{self.percentile(50):>10.2f}"
            f"{self.percentile(99):>10.2f}{statistics.fmean(self.latencies_ms):>10.2f}{max(self.latencies_ms):>10.2f}"
        )


async def timed(client: Client, tool: str, arguments: dict[str, Any], calls: int) -> Figures:
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        result = await client.call_tool(tool, arguments)
        latencies.append((time.perf_counter() - t0) * 1000)
        if result.is_error:
            raise SystemExit(f"{tool} failed: {result.content}")
    return Figures(tool, calls, time.perf_counter() - started, latencies)


async def bench(url: str, token: str, calls: int, warmup: int, mode: str) -> list[Figures]:
    agent = f"bench-{os.getpid()}"
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with (
        http,
        Client(streamable_http_client(url.rstrip("/") + "/mcp", http_client=http), mode=mode) as client,
    ):
        print(f"connected to {url} (MCP {client.protocol_version}); agent {agent}")
        await client.call_tool("register_agent", {"name": agent})
        for i in range(20):
            await client.call_tool("create_issue", {"title": f"bench issue {i}", "body": "x" * 200})
        plan: list[tuple[str, dict[str, Any]]] = [
            ("heartbeat", {"agent": agent, "status": "working"}),
            ("list_issues", {"limit": 20}),
        ]
        for tool, arguments in plan:
            await timed(client, tool, arguments, warmup)
        return [await timed(client, tool, arguments, calls) for tool, arguments in plan]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--token", help="an admin or team token for --url")
    parser.add_argument(
        "--database-url",
        help="an EMPTY database for the server started here (default: a temporary SQLite file)",
    )
    parser.add_argument("--calls", type=int, default=500, help="calls per tool (default 500)")
    parser.add_argument("--warmup", type=int, default=25, help="untimed calls per tool first (default 25)")
    parser.add_argument("--mode", choices=["auto", "legacy"], default="auto", help="MCP protocol era")
    args = parser.parse_args()
    if args.url and not args.token:
        parser.error("--url needs --token")

    if args.url:
        figures = asyncio.run(bench(args.url, args.token, args.calls, args.warmup, args.mode))
    else:
        with own_servers(args.database_url, 1) as servers:
            urls, token = servers.urls, servers.token
            url = urls[0]
            figures = asyncio.run(bench(url, token, args.calls, args.warmup, args.mode))

    print(
        f"\n{'tool':<14}{'calls':>7}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'max ms':>10}"
    )
    for f in figures:
        print(f.row())
    total = sum(f.calls for f in figures)
    seconds = sum(f.seconds for f in figures)
    print(f"{'all':<14}{total:>7}{total / seconds:>10.1f}")


if __name__ == "__main__":
    main()
