"""Every door's security plumbing, once: who is asking, the JSON error, and the audit of refusals.

- `bearer_token` reads `Authorization: Bearer …`; `authenticate` turns the bearer token (or, where
  a door accepts it, the dashboard's session cookie) into a `Caller`. MCP, the REST dependencies,
  the live feeds and the dashboard all call it.
- `error_body` is the one JSON error envelope, `{"error": {"code", "message", "details"}}`;
  `error_response` (FastAPI) and `send_error` (raw ASGI) answer with it and the right headers.
- `audit_denied` writes a refusal to the audit log; a failure to write is logged, never shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import Send

from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import (
    DatabaseUnavailable,
    PermissionDenied,
    RateLimited,
    ShuttingDown,
    Unauthenticated,
    VibeError,
)
from vibe_ensemble.ops.logging import note
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)

# `error="invalid_token"` tells an MCP client the token is the problem (report it, ask for a new
# one), not that it should start an OAuth flow: this server takes static bearer tokens only. A
# request that sent no credentials at all is told only the scheme (RFC 6750 §3.1: no error code).
CHALLENGE = 'Bearer realm="vibe-ensemble", error="invalid_token"'
ASK = 'Bearer realm="vibe-ensemble"'


def bearer_token(headers: Headers) -> str | None:
    """The token of an `Authorization: Bearer …` header; None when there is none (or it is empty).

    Two `Authorization` headers are `Unauthenticated`: which one a proxy in front reads (or logs, or
    strips) is anyone's guess, so neither is taken."""
    values = headers.getlist("authorization")
    if len(values) > 1:
        raise Unauthenticated(f"send one Authorization header (this request carries {len(values)})")
    scheme, _, token = (values[0] if values else "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def remote(conn: HTTPConnection) -> str:
    """The client's address, as uvicorn saw it (after trusted proxies)."""
    return conn.client.host if conn.client else ""


@dataclass(frozen=True)
class Authenticated:
    """A caller and what it presented: a bearer token, or a dashboard session."""

    caller: Caller
    token: str | None
    session: sessions.Session | None


async def authenticate(
    services: Services,
    conn: HTTPConnection,
    *,
    session: bool = False,
    throttle: bool = True,
    token: str | None = None,
) -> Authenticated:
    """The caller behind a request: its bearer token, else (with `session`) its session cookie.

    Neither is `Unauthenticated` (missing token). A bearer token always wins over a cookie.
    `token`: one the client presented otherwise (a WebSocket's first message), in place of the header.
    With `throttle`, the credential's rate limit is spent (`RateLimited` when out).
    """
    token = token or bearer_token(conn.headers)
    if token is None and session:
        found = sessions.from_request(conn)
        if found is not None:
            caller = await services.tokens.authenticate_session(
                found.credential_id, found.hash, remote=remote(conn), throttle=throttle
            )
            note_caller(conn, caller)
            return Authenticated(caller, None, found)
    caller = await services.tokens.authenticate(token or "", remote=remote(conn), throttle=throttle)
    note_caller(conn, caller)
    return Authenticated(caller, token, None)


def note_caller(conn: HTTPConnection, caller: Caller) -> None:
    """Who asked, on the request's log line: role, credential id, bound agent, the token's project."""
    note(
        conn.scope,
        role=caller.role.value,
        credential_id=caller.credential_id,
        agent=caller.agent,
        project=caller.project,
    )


async def still_valid(services: Services, presented: Authenticated) -> bool:
    """For open feeds: the token (or session) is still good. Not billed; a rate limit is not a failure."""
    if presented.session is not None:
        return await sessions.still_valid(services, presented.session)
    try:
        await services.tokens.authenticate(presented.token or "", throttle=False)
    except Unauthenticated:
        return False
    except VibeError:
        return True  # rate limited: the token itself is still good
    return True


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The one JSON error envelope of every door."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


REFUSED = -32000  # JSON-RPC's implementation-defined server error: what /mcp refuses itself


def jsonrpc_error_body(
    code: str, message: str, details: Mapping[str, Any] | None = None, request_id: str | int | None = None
) -> dict[str, Any]:
    """The envelope as a JSON-RPC error, for what /mcp refuses before its SDK reads the call (and a
    path near /mcp): an MCP client shows a JSON-RPC error body at a 4xx or 5xx, and a body of any
    other shape only as "Server returned an error response". The id is the request's when its body
    was read, else null; clients answer the request they sent with it. `data` holds the code and
    details, as `error_body`'s `error` does."""
    error = {"code": REFUSED, "message": f"[{code}] {message}", "data": {"code": code, **dict(details or {})}}
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def error_headers(exc: VibeError) -> dict[str, str]:
    """What a client needs beside the error: when to retry, or how to authenticate."""
    if isinstance(exc, RateLimited | DatabaseUnavailable | ShuttingDown):
        return {"Retry-After": retry_after(exc)}
    if isinstance(exc, Unauthenticated):
        return {"WWW-Authenticate": CHALLENGE if exc.presented else ASK}
    return {}


def retry_after(exc: RateLimited | DatabaseUnavailable | ShuttingDown) -> str:
    """`Retry-After` in whole seconds, at least 1."""
    return str(max(1, round(exc.retry_after)))


def error_response(exc: VibeError) -> JSONResponse:
    """A domain error as a FastAPI response: its status, the envelope and its headers."""
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), exc.http_status, headers=error_headers(exc) or None
    )


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    close: bool = False,
    jsonrpc: bool = False,
) -> None:
    """Answer a raw ASGI request with the error envelope (for middleware and the MCP endpoint);
    `jsonrpc` sends it as a JSON-RPC error (`jsonrpc_error_body`), for a request to /mcp."""
    envelope = jsonrpc_error_body if jsonrpc else error_body
    body = json.dumps(envelope(code, message, details)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        raw.append((b"connection", b"close"))
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_vibe_error(send: Send, exc: VibeError) -> None:
    await send_error(send, exc.http_status, exc.code, exc.message, exc.details, error_headers(exc))


async def audit_denied(services: Services, caller: Caller, exc: PermissionDenied) -> None:
    """Write a refusal to the audit log; a failure to write is logged, never shown to the caller."""
    try:
        await services.audit.denied(caller, exc)
    except Exception:
        log.exception("audit_failed", action="access.denied")
