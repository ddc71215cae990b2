"""`/mcp`: authenticate the bearer token, bind the call context, hand the request to the profile's app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping

from mcp_types import INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    MODERN_PROTOCOL_VERSIONS,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from vibe_ensemble.api import auth
from vibe_ensemble.api.gate import Gate, whole_body
from vibe_ensemble.api.mcp.context import CallContext, bind
from vibe_ensemble.api.mcp.profiles import Profile
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.errors import (
    DatabaseUnavailable,
    RateLimited,
    ShuttingDown,
    StorageFull,
    Unauthenticated,
    VibeError,
)
from vibe_ensemble.services import Services

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
            await _send_json(send, 400, _invalid_request(None, "MCP-Protocol-Version", VERSION_ONCE_RULE))
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
                _plain_refusals(send, request["body"], version),
                refuse=_stopped(request["body"]),
            )


ENVELOPE_RULE = (
    'the body must be one JSON-RPC 2.0 message: an object with "jsonrpc": "2.0", a "method" (a string), '
    'an "id" (a string or an integer) for a request, and "params" (an object) when it has any; a batch '
    "(an array) is not accepted: send one message per POST"
)
CONTENT_TYPE_RULE = rules.JSON_BODY_RULE
ID_RULE = rules.JSONRPC_ID_RULE
VERSION_ONCE_RULE = "the MCP-Protocol-Version header must appear at most once"


def _bad_id(body: bytes) -> bool:
    """True when `body` is a message with an `id` that is neither a string nor an integer (`null`,
    a fraction, a boolean, an object): the SDK takes it for a notification and answers nothing."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return False
    if not isinstance(message, dict) or "id" not in message:
        return False
    request_id = message["id"]
    return isinstance(request_id, bool) or not isinstance(request_id, str | int)


def _plain_refusals(send: Send, request_body: bytes, version: str | None) -> Send:
    """The SDK's own refusals of a malformed request, said as ours are: an envelope it cannot read
    (a batch, `null`, a method that is not a string) came back as pydantic's multi-line dump of its
    models (`Validation error: 4 validation errors for union[JSONRPCRequest, …]`, with pydantic's
    URLs) under `-32602`; a wrong content type as plain text. Each is now JSON-RPC's `-32600` naming
    the rule. A request whose id is not a string or an integer was taken for a notification and
    answered `202` with nothing (nothing ran: no notification has a request's method); it is refused
    naming `id`. A request without the 2026 era's `_meta` whose `MCP-Protocol-Version` header names no
    version this server speaks was told about the `_meta`; it is told the versions (JSON-RPC's
    -32022, as the SDK answers such a version in `_meta`). Only a 400 or a 202 answer is looked at;
    every other passes through untouched."""
    held: ASGIMessage | None = None
    replaced = False

    async def _send(message: ASGIMessage) -> None:
        nonlocal held, replaced
        if replaced:  # the SDK's own body of an answer already given in its place
            return
        if message["type"] == "http.response.start" and message["status"] == 202 and _bad_id(request_body):
            replaced = True
            body = _invalid_request(None, "id", ID_RULE)
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**message, "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if message["type"] == "http.response.start" and message["status"] == 400:
            held = message  # until its body says whether it is one of those
            return
        if held is not None and message["type"] == "http.response.body":
            start, held = held, None
            body = message.get("body", b"")
            if body.startswith(b"Invalid Content-Type"):
                body = _invalid_request(None, "content-type", CONTENT_TYPE_RULE)
            elif _bad_id(request_body):  # the 2026 era's refusal, which does not say why
                body = _invalid_request(None, "id", ID_RULE)
            elif (
                version is not None and version not in SUPPORTED_PROTOCOL_VERSIONS and b"params._meta" in body
            ):
                body = _unsupported_version(json.loads(body).get("id"), version)
            elif b'"message":"Validation error:' in body:
                body = _invalid_request(json.loads(body).get("id"), "body", ENVELOPE_RULE)
            else:
                await send(start)
                await send(message)
                return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _REPLACED]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return _send


_REPLACED = {b"content-type", b"content-length"}


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
        await _refuse(send, ShuttingDown(why), _request_id(body))

    return refuse


def _request_id(body: bytes) -> str | int | None:
    """The id of the JSON-RPC request in `body` when it has a valid one (a string or an integer)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


async def _send_json(send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _invalid_request(request_id: object, field: str, rule: str) -> bytes:
    data = {"code": "invalid_request", "field": field, "rule": rule}
    error = {"code": INVALID_REQUEST, "message": f"[invalid_request] {rule}", "data": data}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _unsupported_version(request_id: object, requested: str) -> bytes:
    shown = requested[:40]
    message = (
        f"[unsupported_protocol_version] MCP-Protocol-Version {shown!r} is not one this server speaks: "
        f"{', '.join(MODERN_PROTOCOL_VERSIONS)} (each request carries its version in params._meta), or "
        f"{', '.join(HANDSHAKE_PROTOCOL_VERSIONS)} after initialize"
    )
    data = {"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": shown}
    error = {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": message, "data": data}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def _send(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return _send
