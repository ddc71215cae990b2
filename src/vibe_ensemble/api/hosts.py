"""One allowed-hosts check for every route: REST, feeds, the dashboard, the API docs and MCP.

A request whose `Host` is not allowed is refused before any route sees it: 421 for HTTP, a
close (1008, which the server sends as 403) for a WebSocket. That is what defeats DNS rebinding
(a page on evil.example whose name now resolves to this server still sends `Host: evil.example`).
A request with two `Host` headers (or, on `/mcp`, two `Origin` headers) is refused with 400: a
proxy in front may read the other one than the one checked here.
On `/mcp` an `Origin`, when a client sends one, must be allowed too (403 otherwise), as the MCP
SDK's own check did; the dashboard checks its forms' origin itself, and REST and the feeds take
bearer tokens (or a session cookie no other site's page can send).

The allowed hosts are `VIBE_ALLOWED_HOSTS` (and `VIBE_ALLOWED_ORIGINS`); when it is empty and
the server listens on loopback, `127.0.0.1`, `localhost` and `[::1]` on any port. On another
address without `VIBE_ALLOWED_HOSTS` there is no check (`serve` warns). `host:*` allows the host
on any port (or none). The probes `/healthz` and `/readyz` are exempt (Kubernetes reaches pods by
IP address, and they carry nothing), and so is `/metrics` when `VIBE_METRICS_TOKEN` is set:
Prometheus scrapes pods by IP address too, and the token is what guards it (api/metrics.py).
Without that token `/metrics` is checked like every other route.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from vibe_ensemble.api import auth
from vibe_ensemble.ops.config import LOOPBACK, Settings

PROBES = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"
LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
MCP_PATH = "/mcp"


@dataclass(frozen=True)
class HostPolicy:
    hosts: tuple[str, ...]
    origins: tuple[str, ...]

    def host_ok(self, host: str | None) -> bool:
        return host is not None and any(_matches(host, allowed) for allowed in self.hosts)

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or any(_matches(origin, allowed) for allowed in self.origins)


def policy(settings: Settings) -> HostPolicy | None:
    """The hosts and origins this server answers for; None when nothing is checked."""
    if settings.allowed_hosts:
        return HostPolicy(tuple(settings.allowed_hosts), tuple(settings.allowed_origins))
    if settings.host in LOOPBACK:
        return HostPolicy(LOOPBACK_HOSTS, LOOPBACK_ORIGINS + tuple(settings.allowed_origins))
    return None


def exempt(settings: Settings) -> frozenset[str]:
    """The paths answered whatever the Host: the probes, and /metrics when a token guards it."""
    return PROBES | {METRICS_PATH} if settings.metrics_token else PROBES


def _matches(value: str, allowed: str) -> bool:
    value, allowed = value.lower(), allowed.lower()
    if value == allowed:
        return True
    if allowed.endswith(":*"):
        base = allowed[:-2]
        port = value.removeprefix(base + ":") if value.startswith(base + ":") else None
        return value == base or (port is not None and port.isdigit())
    return False


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first of that lower-case `name`), as Latin-1 text; None when absent."""
    for key, value in scope.get("headers") or []:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _hosts_and_origins(scope: Scope) -> tuple[list[str], list[str]]:
    """The request's `Host` and `Origin` values, in one pass over its headers (this runs on every
    request), as Latin-1 text."""
    hosts: list[str] = []
    origins: list[str] = []
    for key, value in scope.get("headers") or []:
        if key == b"host":
            hosts.append(bytes(value).decode("latin-1"))
        elif key == b"origin":
            origins.append(bytes(value).decode("latin-1"))
    return hosts, origins


class HostGuard:
    """Refuses a request for a host (or, on /mcp, from an origin) this server does not serve."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = policy(settings)
        self.exempt = exempt(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.policy is None or scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        hosts, origins = _hosts_and_origins(scope)
        mcp = scope["path"] == MCP_PATH
        if len(hosts) > 1 or (mcp and len(origins) > 1):
            # Which one a proxy in front reads is anyone's guess: one checked, another obeyed.
            rule = "a request must carry one Host header (and, on /mcp, at most one Origin)"
            await self._refuse(scope, send, 400, "invalid_input", rule)
            return
        if not self.policy.host_ok(hosts[0] if hosts else None):
            await self._refuse(
                scope, send, 421, "misdirected_request", "Host is not one of VIBE_ALLOWED_HOSTS"
            )
            return
        if mcp and not self.policy.origin_ok(origins[0] if origins else None):
            await self._refuse(
                scope, send, 403, "origin_not_allowed", "Origin is not one of VIBE_ALLOWED_ORIGINS"
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message})
            return
        # on /mcp a JSON-RPC error, as every other refusal there, so an MCP client shows the reason
        await auth.send_error(send, status, code, message, close=True, jsonrpc=scope["path"] == MCP_PATH)
