"""The SDK's own refusals of a request to `/mcp`, said as ours are (docs/user-guide.md#errors): each
is a JSON-RPC error whose message starts with our `[code]` and whose `data` holds it, with the field
and the rule. `plain_refusals` wraps the answer's `send` and replaces such a refusal's body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
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
    -32022, as the SDK answers such a version in `_meta`). The 2026 era's own refusals (`_ours`) get
    our `[code]` and `data` too. Only a 400 or a 202 answer is looked at; every other passes through
    untouched."""
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
            elif (ours := _ours(body, request_body)) is not None:
                body = ours
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

META_FIELD = "params._meta"
META_RULE = (
    f'must be an object holding "{PROTOCOL_VERSION_META_KEY}" (a version this server speaks: '
    f'{", ".join(MODERN_PROTOCOL_VERSIONS)}) and "{CLIENT_CAPABILITIES_META_KEY}" (an object): on the '
    "2026-07-28 protocol every request carries them"
)
# The routing headers of the 2026-07-28 protocol, as the SDK names them (lower case) -> as we do.
_HEADERS = {
    MCP_PROTOCOL_VERSION_HEADER: "MCP-Protocol-Version",
    MCP_METHOD_HEADER: "Mcp-Method",
    MCP_NAME_HEADER: "Mcp-Name",
}
_NAMED_BY = ", ".join(f"params.{key} for {method}" for method, key in NAME_BEARING_METHODS.items())
HEADER_RULES = {
    "MCP-Protocol-Version": "the MCP-Protocol-Version header must equal "
    f'params._meta["{PROTOCOL_VERSION_META_KEY}"]',
    "Mcp-Method": "the Mcp-Method header must be sent, equal to the request's method",
    "Mcp-Name": f"the Mcp-Name header must be sent, equal to {_NAMED_BY}",
}


def _ours(body: bytes, request_body: bytes) -> bytes | None:
    """The SDK's answer `body` to `request_body` said as ours are (`said_as_ours`); None when it is
    ours already, or none of the refusals it knows."""
    try:
        answer = json.loads(body)
        request = json.loads(request_body)
    except (ValueError, RecursionError):
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None
    ours = said_as_ours(error, request=request, version_named="MCP-Protocol-Version")
    if ours is None:
        return None
    answer_id = answer.get("id")
    if answer_id is None:  # the SDK could not tell: the request's own, when it has a valid one
        answer_id = request_id(request_body)
    return json.dumps({"jsonrpc": "2.0", "id": answer_id, "error": ours}).encode()


_UNKNOWN = object()


def said_as_ours(
    error: Mapping[str, Any], *, request: Any = _UNKNOWN, version_named: str = "protocol version"
) -> dict[str, Any] | None:
    """The 2026 era's refusals, made by the SDK before any handler runs (its checks of a request's
    envelope, its routing headers and its version), as a JSON-RPC error object said as ours are; None
    for an error already ours (`[code] …`), or any other. `request` is the refused request (decoded),
    when known; `version_named` is where the client gave its version (a header, or `_meta` alone).

    - the envelope (`params._meta`) missing or short: -32602 `[invalid_input] params._meta: rule`,
      `data` `{"code": "invalid_input", "field": "params._meta", "rule"}`, as any parameter refused;
    - a routing header missing, repeated or disagreeing with the body: the protocol's own -32020,
      said `[invalid_request] rule` with `data` `{"code": "invalid_request", "field": the header,
      "rule"}`, as a second `MCP-Protocol-Version` is;
    - a version this server does not speak: -32022 listing every version it speaks, in both eras
      (the SDK listed only the 2026 era's);
    - a body that is no single request (a batch, `null`, `"params": "x"`): -32600 naming the rule,
      as in the older era."""
    code, said, data = error.get("code"), error.get("message"), error.get("data")
    if not isinstance(said, str) or said.startswith("["):
        return None
    requested = data.get("requested") if isinstance(data, Mapping) else None
    # (a version it speaks refused where it does not fit, such as `initialize` on a 2026-era stdio
    # connection, is told so by the SDK: left as it is)
    if code == UNSUPPORTED_PROTOCOL_VERSION and isinstance(requested, str):
        return (
            None if requested in SUPPORTED_PROTOCOL_VERSIONS else _unsupported_error(requested, version_named)
        )
    if code == INVALID_REQUEST and request is not _UNKNOWN and not _one_request(request):
        return _invalid_request_error("body", ENVELOPE_RULE)
    # (the envelope's checks: `params._meta must be…`, `params._meta is missing…`, `the protocol-version
    # envelope value must be a string`)
    if code == INVALID_PARAMS and said.startswith(("params._meta ", "the protocol-version envelope")):
        return _refused_meta(request)
    if code == HEADER_MISMATCH:
        return _refused_header(said)
    return None


def _one_request(message: Any) -> bool:
    """Whether `message` has the shape of one JSON-RPC request (ENVELOPE_RULE)."""
    return (
        isinstance(message, dict)
        and message.get("jsonrpc") == "2.0"
        and isinstance(message.get("method"), str)
        and isinstance(message.get("params", {}), dict)
    )


def _refused_meta(request: Any) -> dict[str, Any]:
    """-32602 `[invalid_input] params._meta: rule (missing: …)` for a 2026-era request whose `_meta`
    is not the envelope the protocol asks for."""
    problem = ""
    if request is not _UNKNOWN:
        params = request.get("params") if isinstance(request, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict):
            keys = [
                key for key in (PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY) if key not in meta
            ]
            problem = f" (missing: {', '.join(keys)})" if keys else ""
        else:
            problem = " (got none)" if meta is None else f" (got {type(meta).__name__})"
    data = {"code": "invalid_input", "field": META_FIELD, "rule": META_RULE}
    return {
        "code": INVALID_PARAMS,
        "message": f"[invalid_input] {META_FIELD}: {META_RULE}{problem}",
        "data": data,
    }


def _refused_header(said: str) -> dict[str, Any]:
    """The protocol's -32020 for a routing header (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`,
    an `Mcp-Param-*`) missing, repeated or not what the body says, naming the header and the rule.
    The SDK's message starts with the header's name (`mcp-method header does not match …`)."""
    named, _, rest = said.partition(" header ")
    header = _HEADERS.get(named.lower(), named) if rest else "headers"
    if rest.startswith("appears more than once"):
        rule = f"the {header} header must appear at most once"
    else:
        rule = HEADER_RULES.get(header, said)
    data = {"code": "invalid_request", "field": header, "rule": rule}
    return {"code": HEADER_MISMATCH, "message": f"[invalid_request] {rule}", "data": data}


def request_id(body: bytes) -> str | int | None:
    """The id of the JSON-RPC request in `body` when it has a valid one (a string or an integer)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = message.get("id") if isinstance(message, dict) else None
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


def invalid_request(request_id: object, field: str, rule: str) -> bytes:
    """JSON-RPC's -32600: `[invalid_request] rule`, data `{"code": "invalid_request", "field", "rule"}`."""
    error = _invalid_request_error(field, rule)
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _invalid_request_error(field: str, rule: str) -> dict[str, Any]:
    data = {"code": "invalid_request", "field": field, "rule": rule}
    return {"code": INVALID_REQUEST, "message": f"[invalid_request] {rule}", "data": data}


def unsupported_version(request_id: object, requested: str) -> bytes:
    """JSON-RPC's -32022 naming every version this server speaks, in both eras (`data.supported`),
    for a version given in the `MCP-Protocol-Version` header."""
    error = _unsupported_error(requested, "MCP-Protocol-Version")
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _unsupported_error(requested: str, named: str) -> dict[str, Any]:
    shown = requested[:40]
    message = (
        f"[unsupported_protocol_version] {named} {shown!r} is not one this server speaks: "
        f"{', '.join(MODERN_PROTOCOL_VERSIONS)} (each request carries its version in params._meta), or "
        f"{', '.join(HANDSHAKE_PROTOCOL_VERSIONS)} after initialize"
    )
    data = {"supported": list(SUPPORTED_PROTOCOL_VERSIONS), "requested": shown}
    return {"code": UNSUPPORTED_PROTOCOL_VERSION, "message": message, "data": data}
