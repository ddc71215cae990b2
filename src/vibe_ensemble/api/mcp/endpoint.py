"""`/mcp`: authenticate the bearer token, bind the call context, hand the request to the profile's app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from vibe_ensemble.api import auth
from vibe_ensemble.api.gate import Gate, whole_body
from vibe_ensemble.api.mcp.context import CallContext, bind
from vibe_ensemble.api.mcp.profiles import Profile
from vibe_ensemble.api.mcp.refusals import invalid_request, plain_refusals, request_id
from vibe_ensemble.domain.errors import (
    DatabaseUnavailable,
    RateLimited,
    ShuttingDown,
    StorageFull,
    Unauthenticated,
    VibeError,
)
from vibe_ensemble.services import Services

VERSION_ONCE_RULE = "the MCP-Protocol-Version header must appear at most once"
NO_STREAM = (
    "GET /mcp opens no stream on this server: send each request as a POST, its answer comes back on "
    "it (resource changes: POST subscriptions/listen)"
)


class MCPEndpoint:
    """An unauthenticated request never reaches the SDK; an authenticated one runs inside its `CallContext`.

    A request over the caller's rate limit still reaches the SDK, so that a tool call answers with a
    tool error the agent can read; the HTTP answer carries `Retry-After` (see `CallContext`). The SDK
    serves it through `gate`: at most a few calls' work at once, the rest queued in order (api/gate.py).
    """

    def __init__(
        self, services: Services, apps: Mapping[Profile, ASGIApp], default_profile: str, gate: Gate
    ) -> None:
        self.services = services
        self.gate = gate
        self.apps: dict[str, ASGIApp] = {str(name): app for name, app in apps.items()}
        self.default_profile = default_profile

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            found = await auth.authenticate(self.services, HTTPConnection(scope), throttle=False)
        except (Unauthenticated, RateLimited, DatabaseUnavailable, StorageFull) as exc:
            # A token not verified recently cannot be checked while the database is down (see
            # TokenService.authenticate): the client hears 503 and when to come back.
            await _refuse(send, exc)
            return
        if scope["method"] == "GET":
            # Over stateless HTTP no message reaches a client but on the POST it is the answer to (and
            # the stream `subscriptions/listen` opens): a GET stream would stay open with nothing
            # ever on it. The protocol lets a server that offers no such stream answer 405.
            await auth.send_error(send, 405, "method_not_allowed", NO_STREAM, headers={"Allow": "POST"})
            return
        versions = [value for key, value in scope["headers"] if key == b"mcp-protocol-version"]
        if len(versions) > 1:  # the SDK reads one copy; a proxy before it may have routed by the other
            await _send_json(send, 400, invalid_request(None, "MCP-Protocol-Version", VERSION_ONCE_RULE))
            return
        services = self.services
        call = CallContext.admit(
            services, found.caller, receive, still_valid=lambda: auth.still_valid(services, found)
        )
        if call.limited is not None:
            send = _with_header(send, b"retry-after", auth.retry_after(call.limited).encode())
        profile = found.caller.tool_profile or self.default_profile
        app = self.apps.get(profile, self.apps[self.default_profile])
        request = await whole_body(receive)  # before the gate: a client slow to send holds no place
        if request["type"] != "http.request":
            return  # the client left mid-body
        version = versions[0].decode("latin-1") if versions else None
        with bind(call):
            await self.gate.serve(
                app,
                scope,
                request,
                receive,
                plain_refusals(send, request["body"], version),
                refuse=_stopped(request["body"]),
            )


async def _refuse(send: Send, exc: VibeError, request_id: str | int | None = None) -> None:
    """A request refused before the SDK reads it (the token, the rate limit, an outage): the status
    and headers every door answers with (401 and `WWW-Authenticate`, 429 or 503 and `Retry-After`),
    with a JSON-RPC error as the body (`auth.jsonrpc_error_body`): an agent whose token was wrong
    was shown only "Server returned an error response"."""
    body = json.dumps(auth.jsonrpc_error_body(exc.code, exc.message, exc.details, request_id)).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in auth.error_headers(exc).items()]
    await _send_json(send, exc.http_status, body, extra)


def _stopped(body: bytes) -> Callable[[Send, str], Awaitable[None]]:
    """The answer to a request the stopping server cancelled before it answered (api/gate.py says
    which way), with the request's id (its body was read)."""

    async def refuse(send: Send, why: str) -> None:
        await _refuse(send, ShuttingDown(why), request_id(body))

    return refuse


async def _send_json(send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def _send(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return _send
