"""Who is calling a tool, prompt or resource, and how its failures reach the agent.

The endpoint (HTTP) or the stdio command binds a `CallContext` for the duration of a
request with `bind`; tools read it with `acting()`. It travels as a context variable,
which the SDK's request tasks inherit, never through the ASGI scope.

The rate limit is decided once per HTTP request (`CallContext.admit`) and enforced by
`CallContext.acting` — both here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import structlog
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, CallToolResult, TextContent
from pydantic import TypeAdapter
from pydantic_core import to_json
from starlette.types import Receive

from vibe_ensemble.api import auth
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import PermissionDenied, RateLimited, Unauthenticated, VibeError
from vibe_ensemble.services import Services

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CallContext:
    """The services and the authenticated caller of one MCP request."""

    services: Services
    caller: Caller
    limited: RateLimited | None = None  # the caller's rate limit was spent by this request
    audit_denials: bool = True  # False over stdio: the process is its own token's holder
    # The HTTP request's own `receive`, which says when its client has gone (api/held.py); None
    # over stdio.
    receive: Receive | None = None
    # Whether the credential is still good (not revoked, not expired), for what stays open past one
    # answer: a `subscriptions/listen` stream asks it every `feed_keepalive_s`. None over stdio.
    still_valid: Callable[[], Awaitable[bool]] | None = None
    # Set once the credential is found revoked or expired while the context lives on (stdio, which
    # binds one context for the whole process): every handler then refuses.
    ended: asyncio.Event | None = None

    @classmethod
    def admit(
        cls,
        services: Services,
        caller: Caller,
        receive: Receive | None = None,
        still_valid: Callable[[], Awaitable[bool]] | None = None,
    ) -> CallContext:
        """Spend one request of the caller's rate limit; when it is out, every handler refuses."""
        try:
            services.tokens.throttle(caller)
        except RateLimited as exc:
            return cls(services, caller, limited=exc, receive=receive, still_valid=still_valid)
        return cls(services, caller, receive=receive, still_valid=still_valid)

    def acting(self) -> Caller:
        """The caller; `Unauthenticated` once `ended`, `RateLimited` when this request is over its limit."""
        if self.ended is not None and self.ended.is_set():
            raise Unauthenticated(
                "the token was revoked or has expired: start the MCP server with a live token"
            )
        if self.limited is not None:
            raise RateLimited(self.limited.message, self.limited.retry_after)
        return self.caller


_CURRENT: ContextVar[CallContext | None] = ContextVar("vibe_mcp_call", default=None)


@contextmanager
def bind(call: CallContext) -> Iterator[CallContext]:
    """Make `call` the context of everything run (and spawned) inside the block."""
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)


def bound() -> CallContext | None:
    """The bound context, if any."""
    return _CURRENT.get()


def acting() -> tuple[Services, Caller]:
    """The services and the caller of the current call (see `CallContext.acting`)."""
    call = _CURRENT.get()
    if call is None:
        raise ToolError("[unauthenticated] no credential: connect with a bearer token")
    return call.services, call.acting()


async def _audit(exc: PermissionDenied) -> None:
    call = _CURRENT.get()
    if call is not None and call.audit_denials:
        await auth.audit_denied(call.services, call.caller, exc)


def _mapped(
    fn: Callable[P, Awaitable[R]],
    answer: Callable[[VibeError], Exception],
    internal: Callable[[], Exception],
    passed: type[Exception],
    event: str,
) -> Callable[P, Awaitable[R]]:
    """Wrap a handler: a domain error becomes `answer(exc)` (a refusal audited first), an error of
    type `passed` goes through, anything else is logged and becomes `internal()`: no internals leak."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except VibeError as exc:
            if isinstance(exc, PermissionDenied):
                await _audit(exc)
            raise answer(exc) from exc
        except passed:
            raise
        except Exception as exc:
            log.exception(event, handler=fn.__name__)
            raise internal() from exc

    return wrapper


def _tool_error(exc: VibeError) -> Exception:
    detail = f" {json.dumps(exc.details, default=str)}" if exc.details else ""
    return ToolError(f"[{exc.code}] {exc.message}{detail}")


def _protocol_error(exc: VibeError) -> Exception:
    data = {"code": exc.code, **json.loads(json.dumps(exc.details, default=str))}
    return MCPError(INVALID_PARAMS, f"[{exc.code}] {exc.message}", data)


def invalid_params(field: str, problem: str, rule: str) -> MCPError:
    """A request's params refused (-32602) as a refused input reads everywhere: `[invalid_input]
    field: problem`, with the field and the rule in the error's data."""
    return MCPError(
        INVALID_PARAMS,
        f"[invalid_input] {field}: {problem}",
        {"code": "invalid_input", "field": field, "rule": rule},
    )


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn service errors into MCP tool errors an agent can read and act on; never leak internals."""
    return _mapped(
        fn, _tool_error, lambda: ToolError("[internal] internal server error"), ToolError, "tool_failed"
    )


def direct_results(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A tool's record (a dataclass), or list (of records or numbers), answered as the SDK's
    `CallToolResult`, made once: the structured copy, the record's JSON form by its type's serializer
    (pydantic-core), a list's under `result` as the SDK wraps lists, and one block of text, that copy
    written as compact JSON by pydantic-core (not ASCII-escaped): a little less work than writing the
    record's JSON and parsing it back for the copy (an inbox of twenty messages: 53-56 µs, not 56-60).

    Left to the SDK, each record would be written as indented JSON, then validated and dumped again
    for the structured copy, and a list would be one text block per item (none for an empty list):
    a client reading the first block saw one item of many, or nothing. Here the text is the whole
    value, an empty list `[]`. The SDK still validates the structured copy against the tool's output
    schema. Other results go to the SDK as they are.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        value = await fn(*args, **kwargs)
        if dataclasses.is_dataclass(value):
            data = _json_form(value)
            return cast(R, WireResult(content=[_text(to_json(data).decode())], structured_content=data))
        if isinstance(value, list):
            items = [_json_form(item) for item in value]
            text = to_json(items).decode()
            return cast(R, WireResult(content=[_text(text)], structured_content={"result": items}))
        return value

    return wrapper


# How the SDK's runner dumps a handler's result model for the wire (mcp/server/runner.py, `_dump_result`).
_WIRE_DUMP: dict[str, Any] = {"by_alias": True, "mode": "json", "exclude_none": True}


class WireResult(CallToolResult):
    """A result of `direct_results`: one text block and the structured copy, whose wire form is
    built from those parts.

    The SDK dumps a handler's result model for the wire (`model_dump(by_alias=True, mode="json",
    exclude_none=True)`), which walks the structured copy value by value to rebuild the dict made
    here from JSON already (an inbox: twenty messages; 4% of a call's instructions,
    bench/instructions.py). That dump is answered from the parts, the dict pydantic would give
    (tests/unit/test_mcp_results.py compares the two). A result changed after it was made (an
    error, `_meta`, other content) and any other dump are pydantic's own.
    """

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        content = self.content
        if (
            kwargs != _WIRE_DUMP
            or self.meta is not None
            or self.is_error
            or self.result_type != "complete"
            or not isinstance(self.structured_content, dict)
            or len(content) != 1
            or type(content[0]) is not TextContent
            or content[0].annotations is not None
            or content[0].meta is not None
        ):
            return super().model_dump(**kwargs)
        return {
            "content": [{"type": "text", "text": content[0].text}],
            "structuredContent": self.structured_content,
            "isError": False,
            "resultType": "complete",
        }


def _json_form(record: Any) -> Any:
    """A record (or a number) as JSON's values (dicts, lists, text, numbers), by its type's
    serializer, which follows the type's fields instead of inspecting every value."""
    return _serializer(record.__class__).dump_python(record, mode="json")


@functools.cache
def _serializer(record_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(record_type)


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def protocol_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn service errors of prompts and resources into JSON-RPC errors an agent can act on."""
    internal = lambda: MCPError(INTERNAL_ERROR, "[internal] internal server error")  # noqa: E731
    return _mapped(fn, _protocol_error, internal, MCPError, "mcp_read_failed")
