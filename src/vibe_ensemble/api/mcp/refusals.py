"""The SDK's own refusals of a request to `/mcp`, said as ours are (docs/user-guide.md#errors): each
is a JSON-RPC error whose message starts with our `[code]` and whose `data` holds it, with the field
and the rule. `plain_refusals` wraps the answer's `send` and replaces such a refusal's body."""

from __future__ import annotations

import json

from mcp_types import INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    MODERN_PROTOCOL_VERSIONS,
    SUPPORTED_PROTOCOL_VERSIONS,
)
from starlette.types import Message as ASGIMessage
from starlette.types import Send

from vibe_ensemble.domain import rules

ENVELOPE_RULE = (
    'the body must be one JSON-RPC 2.0 message: an object with "jsonrpc": "2.0", a "method" (a string), '
    'an "id" (a string or an integer) for a request, and "params" (an object) when it has any; a batch '
    "(an array) is not accepted: send one message per POST"
)
CONTENT_TYPE_RULE = rules.JSON_BODY_RULE
ID_RULE = rules.JSONRPC_ID_RULE


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


def plain_refusals(send: Send, request_body: bytes, version: str | None) -> Send:
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
            body = invalid_request(None, "id", ID_RULE)
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
                body = invalid_request(None, "content-type", CONTENT_TYPE_RULE)
            elif _bad_id(request_body):  # the 2026 era's refusal, which does not say why
                body = invalid_request(None, "id", ID_RULE)
            elif (
                version is not None and version not in SUPPORTED_PROTOCOL_VERSIONS and b"params._meta" in body
            ):
                body = unsupported_version(json.loads(body).get("id"), version)
            elif b'"message":"Validation error:' in body:
                body = invalid_request(json.loads(body).get("id"), "body", ENVELOPE_RULE)
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


def invalid_request(request_id: object, field: str, rule: str) -> bytes:
    """JSON-RPC's -32600: `[invalid_request] rule`, data `{"code": "invalid_request", "field", "rule"}`."""
    data = {"code": "invalid_request", "field": field, "rule": rule}
    error = {"code": INVALID_REQUEST, "message": f"[invalid_request] {rule}", "data": data}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def unsupported_version(request_id: object, requested: str) -> bytes:
    """JSON-RPC's -32022 naming every version this server speaks, in both eras (`data.supported`)."""
    shown = requested[:40]
    message = (
        f"[unsupported_protocol_version] MCP-Protocol-Version {shown!r} is not one this server speaks: "
        f"{', '.join(MODERN_PROTOCOL_VERSIONS)} (each request carries its version in params._meta), or "
        f"{', '.join(HANDSHAKE_PROTOCOL_VERSIONS)} after initialize"
    )
    data = {"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": shown}
    error = {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": message, "data": data}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
