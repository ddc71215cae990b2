"""`vibe-ensemble mcp --url URL`: a stdio MCP server that forwards every message to a remote server.

Clients that speak only stdio share one running server this way. The bridge does not interpret
MCP: it reads JSON-RPC messages from stdin and sends them over Streamable HTTP with the token,
and writes what the server sends back (answers, notifications, server requests) to stdout. It
adds only what HTTP needs beside the body: the bearer token and the routing headers
(`MCP-Protocol-Version` — from each request's `_meta` on the 2026 protocol, from the
`initialize` answer on the older ones — `Mcp-Method` and `Mcp-Name`).

A request the server cannot answer (unreachable, token refused, rate limited) is answered on
stdout with a JSON-RPC error that says so, and the bridge keeps running: when the server is back,
the next request goes through.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import httpx2
import mcp_types as types
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
)
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types.version import LATEST_MODERN_VERSION

from vibe_ensemble.auth import tokens
from vibe_ensemble.cli.common import EXAMPLE_MCP_URL
from vibe_ensemble.cli.inflight import DRAIN_S, Pending
from vibe_ensemble.cli.stdin_lines import Lines, refusal

# The SDK's own defaults: a response stream may stay open for minutes (waits, subscriptions).
TIMEOUT = httpx2.Timeout(30.0, read=300.0)
PROBE_TIMEOUT_S = 10.0


class BridgeError(Exception):
    """The bridge cannot start as asked; the message says why, in one line."""


def in_clear(url: str) -> bool:
    """True when the token would cross the network unencrypted (http:// to a host not on loopback)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


def _jsonrpc_error(status: int, message: str) -> httpx2.Response:
    """An error for the stdio client; a token in `message` (an HTTP library's error may quote a
    header) is cut to its prefix."""
    error = {"code": types.CONNECTION_CLOSED, "message": tokens.redact(message)}
    body = {"jsonrpc": "2.0", "id": None, "error": error}
    return httpx2.Response(status, json=body)


REFUSED = -32000  # api/auth.REFUSED (not imported: it would load the server into the bridge)


def _vibe_error(body: bytes) -> str | None:
    """`[code] message` from our error envelope: REST's, or /mcp's refusal before the call is read
    (a JSON-RPC error -32000 whose message starts with its code: the token, the rate limit, an
    outage); None for any other body (the SDK's own JSON-RPC errors go to the client as they are)."""
    try:
        error = json.loads(body).get("error")
        code, message = error["code"], error["message"]
    except (ValueError, AttributeError, KeyError, TypeError):
        return None
    if isinstance(code, str) and isinstance(message, str):
        return f"[{code}] {message}"
    if code == REFUSED and isinstance(message, str):
        return message
    return None


class Answering(httpx2.AsyncBaseTransport):
    """HTTP to the server, where a failure becomes a JSON-RPC error the transport hands the client.

    The SDK transport reads a JSON-RPC error in a 4xx/5xx body as the answer to the request that
    met it. So a server that cannot be reached, and our own error envelope (a refused token, a
    rate limit, a database outage), reach the stdio client as an error naming the cause.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.TransportError as exc:
            return _jsonrpc_error(
                503, f"vibe-ensemble mcp: cannot reach {self.url}: {exc or type(exc).__name__}"
            )
        if response.status_code < 400 or request.method != "POST":
            return response
        body = await response.aread()
        await response.aclose()
        problem = _vibe_error(body)
        if problem is None:  # the SDK's own JSON-RPC error, or something we do not know: as it came
            return httpx2.Response(response.status_code, headers=response.headers, content=body)
        return _jsonrpc_error(response.status_code, f"{self.url} answered {response.status_code}: {problem}")

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Routing:
    """The HTTP headers each message needs, learnt from the messages themselves."""

    handshake_version: str | None = None  # negotiated by `initialize` (the protocols before 2026)
    initialize_ids: set[types.RequestId] = field(default_factory=set)

    def headers(self, message: types.JSONRPCMessage) -> dict[str, str] | None:
        if isinstance(message, types.JSONRPCRequest) and message.method == "initialize":
            self.initialize_ids.add(message.id)
            self.handshake_version = None
            return None
        params = getattr(message, "params", None) or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(types.PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
        if isinstance(version, str) and isinstance(message, types.JSONRPCRequest | types.JSONRPCNotification):
            headers = {MCP_PROTOCOL_VERSION_HEADER: version, MCP_METHOD_HEADER: message.method}
            name = params.get(NAME_BEARING_METHODS.get(message.method, ""))
            if isinstance(name, str):
                headers[MCP_NAME_HEADER] = encode_header_value(name)
            return headers
        if self.handshake_version is not None:
            return {MCP_PROTOCOL_VERSION_HEADER: self.handshake_version}
        return None

    def learn(self, message: types.JSONRPCMessage) -> None:
        """Note the version an `initialize` answer settled on."""
        if isinstance(message, types.JSONRPCResponse) and message.id in self.initialize_ids:
            self.initialize_ids.discard(message.id)
            version = message.result.get("protocolVersion")
            self.handshake_version = version if isinstance(version, str) else None


async def probe(url: str, token: str) -> None:
    """Check, before serving, that `url` is an MCP server that takes the token (raises BridgeError)."""
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "server/discover",
        "params": {
            "_meta": {
                types.PROTOCOL_VERSION_META_KEY: LATEST_MODERN_VERSION,
                types.CLIENT_CAPABILITIES_META_KEY: {},
            }
        },
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        MCP_PROTOCOL_VERSION_HEADER: LATEST_MODERN_VERSION,
        MCP_METHOD_HEADER: "server/discover",
    }
    try:
        async with httpx2.AsyncClient(timeout=PROBE_TIMEOUT_S) as http:
            response = await http.post(url, json=body, headers=headers)
    except httpx2.HTTPError as exc:
        raise BridgeError(
            f"cannot reach {url}: {exc or type(exc).__name__} (is the server running?)"
        ) from None
    if response.status_code == 401:
        problem = _vibe_error(response.content) or "401"
        raise BridgeError(f"{url} refused the token: {problem}")
    if response.status_code == 404:
        raise BridgeError(
            f"no MCP endpoint at {url} (404): the server's MCP URL ends in /mcp, e.g. {EXAMPLE_MCP_URL}"
        )
    if response.status_code >= 400 and _vibe_error(response.content) is not None:
        raise BridgeError(f"{url} answered {response.status_code}: {_vibe_error(response.content)}")
    if response.status_code >= 300 and "json" not in response.headers.get("content-type", ""):
        raise BridgeError(f"{url} answered HTTP {response.status_code}: is it a Vibe Ensemble MCP endpoint?")


async def serve(url: str, token: str, complain: Callable[[str], None]) -> None:
    """Forward MCP between this process's stdio and the server at `url` until stdin closes, and
    the requests read before it closed are answered (at most `DRAIN_S` more).

    `complain` is told (on stderr, never stdout: that is the wire) about what cannot be forwarded.
    """
    routing = Routing()
    pending = Pending()
    lines = Lines()
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT, transport=Answering(url)
    )
    async with (
        http,
        stdio_server(stdin=lines) as (stdin, stdout),  # type: ignore[arg-type]  # (reads lines)
        streamable_http_client(url, http_client=http) as (from_server, to_server),
        anyio.create_task_group() as tasks,
    ):

        async def downstream() -> None:
            async for item in from_server:
                if isinstance(item, SessionMessage):
                    routing.learn(item.message)
                    await stdout.send(SessionMessage(item.message))
                    pending.answered(item.message)
                else:
                    complain(f"dropped a message from the server that did not parse ({type(item).__name__})")
            tasks.cancel_scope.cancel()  # the transport closed: nothing more can be forwarded

        tasks.start_soon(downstream)
        try:
            async for item in stdin:
                answer = refusal(item, lines.take())  # what the server would not answer, answered here
                if answer is not None:
                    await stdout.send(SessionMessage(answer))
                    continue
                if not isinstance(item, SessionMessage):  # a blank line: nothing was asked
                    continue
                headers = routing.headers(item.message)
                metadata = ClientMessageMetadata(headers=headers) if headers else None
                pending.asked(item.message)
                await to_server.send(SessionMessage(item.message, metadata=metadata))
            # stdin closed: what was asked before is still answered (a client that writes its last
            # requests and closes its end, as a pipe does, gets every answer), then the bridge stops
            with anyio.move_on_after(DRAIN_S):
                await pending.wait()
            if pending.ids:
                complain(f"stopped with {len(pending.ids)} request(s) unanswered after {DRAIN_S:g} s")
        finally:  # stdin closed (the client is gone), or the server side did
            tasks.cancel_scope.cancel()
            stdout.close()  # lets the stdio transport finish writing and return
