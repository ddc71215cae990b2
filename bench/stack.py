"""The HTTP stack alone: what one MCP tool call costs our app and the bare SDK app, in process.

    python bench/stack.py                    # 2,000 rounds each, a temporary SQLite file
    python bench/stack.py --rounds 5000
    python bench/stack.py --database-url postgresql+asyncpg://…/empty_db     # written to!

No sockets and no uvicorn: each request is handed to the ASGI app as uvicorn would hand it
(the same headers and body the official SDK client sends), one after the other. Each round is
the swarm's loop (bench/swarm.py): `send_message` to the next agent, then `fetch_inbox`. The
bare app (bench/bare_server.py) answers the same calls with constants, so the difference is our
own work: middleware, authentication, the tool and the database. A third app, `shaped`, is the
bare server answering with our own recorded answers (the same bytes ours sends), so shaped minus
bare is what the SDK spends on our payloads, and ours minus shaped is the rest of our work. CPU
per call is `time.process_time()` over the rounds; the apps run in turn in slices, so drift on a
shared machine touches them alike. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import mcp.server._streamable_http_modern as sdk_transport
from bare_server import asgi, build, build_shaped  # bench/bare_server.py

from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.mcp import wire_json
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.ops.config import DEFAULT_RATE_LIMITS, Settings
from vibe_ensemble.ops.logging import configure_logging
from vibe_ensemble.runtime import Runtime

AGENTS = 4
SLICE = 100  # rounds of one app before the other's turn
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Caller:
    """Calls one ASGI app's /mcp as a client would, and keeps the last answer."""

    def __init__(self, app: Any, host: str) -> None:
        self.app = app
        self.host = host.encode()
        self.next_id = 0
        self.answers: dict[str, dict[str, Any]] = {}

    def request(
        self, token: str | None, tool: str, arguments: dict[str, Any]
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The headers and body the official SDK client sends for a `tools/call`."""
        self.next_id += 1
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments, "_meta": META},
            }
        ).encode()
        headers = [
            (b"host", self.host),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
            (b"mcp-protocol-version", b"2026-07-28"),
            (b"mcp-method", b"tools/call"),
            (b"mcp-name", tool.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        return headers, body

    def answered(self, tool: str, status: int, raw: bytes) -> dict[str, Any]:
        """The JSON-RPC answer in `raw`, kept as the tool's last answer; a failed call ends the run."""
        answer: dict[str, Any] = json.loads(raw)
        if status != 200 or "error" in answer or answer["result"].get("isError"):
            raise SystemExit(f"{tool} failed: HTTP {status} {answer}")
        self.answers[tool] = answer["result"]
        return answer

    async def call(self, token: str | None, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        headers, body = self.request(token, tool, arguments)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/mcp",
            "raw_path": b"/mcp",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        sent = False
        chunks: list[bytes] = []
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the client stays connected
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return self.answered(tool, status, b"".join(chunks))


async def start_ours(stack: AsyncExitStack, database_url: str | None) -> tuple[Caller, list[str | None]]:
    """Our app, started within `stack` (on a temporary SQLite file unless `database_url`), with
    AGENTS registered agents `agent-0`… and their agent-bound tokens; a `Caller` of it."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory())
    unlimited = dict.fromkeys(DEFAULT_RATE_LIMITS, 0)  # this measures cost, not policy
    settings = Settings(  # type: ignore[call-arg]
        database_url=database_url or f"sqlite:///{tmp}/bench.db",
        data_dir=Path(tmp),
        rate_limit_per_minute=unlimited,
    )
    configure_logging(settings)  # as `serve` does: one line per request and per tool call, to stdout
    runtime = Runtime(settings)
    await runtime.start(apply_migrations=True)
    stack.push_async_callback(runtime.stop)
    tokens: list[str | None] = []
    for i in range(AGENTS):
        name = f"agent-{i}"
        await runtime.services.agents.register(SYSTEM, project="default", name=name, role=AgentRole.WORKER)
        _, secret = await runtime.services.tokens.create(
            SYSTEM, role=TokenRole.WORKER, project="default", agent=name
        )
        tokens.append(secret)
    app = create_app(runtime)
    await stack.enter_async_context(app.router.lifespan_context(app))
    return Caller(app, f"{settings.host}:{settings.port}"), tokens


async def run(rounds: int, database_url: str | None) -> None:
    names = [f"agent-{i}" for i in range(AGENTS)]
    async with AsyncExitStack() as stack:
        ours, tokens = await start_ours(stack, database_url)
        bare_server = build()
        clients = {
            "ours": (ours, tokens),
            "bare": (
                Caller(asgi(bare_server), "127.0.0.1:8080"),
                [None] * AGENTS,
            ),  # makes its session manager
        }
        await stack.enter_async_context(bare_server.session_manager.run())

        async def one_round(name: str, i: int) -> None:
            client, keys = clients[name]
            # Our app has the SDK's transport write with pydantic-core (api/mcp/wire_json.py); the
            # bare and shaped apps, served in this process too, write with the SDK's own encoder, as
            # they do in a process of their own (bench/swarm.py).
            vars(sdk_transport)["json"] = wire_json.WireJson() if name == "ours" else json
            me, peer = i % AGENTS, (i + 1) % AGENTS
            await client.call(
                keys[me], "send_message", {"to": [names[peer]], "subject": f"s{i}", "body": "hello"}
            )
            await client.call(keys[peer], "fetch_inbox", {"limit": 20, "unread_only": True})

        for i in range(SLICE):  # ours first: the shaped app answers with what ours answered
            await one_round("ours", i)
        shaped_server = build_shaped(clients["ours"][0].answers)
        clients["shaped"] = (Caller(asgi(shaped_server), "127.0.0.1:8080"), [None] * AGENTS)
        await stack.enter_async_context(shaped_server.session_manager.run())
        for name in clients:  # warm-up: caches, plans, first-request work
            for i in range(SLICE):
                await one_round(name, i)
        cpu = dict.fromkeys(clients, 0.0)
        calls = dict.fromkeys(clients, 0)
        done = 0
        while done < rounds:
            for name in clients:
                started = time.process_time()
                for i in range(done, done + SLICE):
                    await one_round(name, i)
                cpu[name] += time.process_time() - started
                calls[name] += 2 * SLICE
            done += SLICE
    per_call = {name: 1000 * cpu[name] / calls[name] for name in cpu}
    backend = "PostgreSQL" if database_url else "SQLite"
    print(f"rounds={done} calls each={calls['ours']} (send_message + fetch_inbox, {backend}, in process)")
    for name, ms in per_call.items():
        print(f"  {name:6} CPU per call {ms:.3f} ms")
    ratio, own = per_call["ours"] / per_call["bare"], per_call["ours"] - per_call["bare"]
    print(f"  ratio {ratio:.2f}x   our own work {own:.3f} ms/call")
    payload, rest = per_call["shaped"] - per_call["bare"], per_call["ours"] - per_call["shaped"]
    print(
        f"  of which the SDK on our payloads (shaped - bare) {payload:.3f} ms, "
        f"the rest of our work (ours - shaped) {rest:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--database-url", help="an EMPTY database (default: a temporary SQLite file)")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.database_url))


if __name__ == "__main__":
    main()
