"""Every MCP tool call is counted and timed by tool and outcome (`vibe_mcp_tool_calls_total`,
`vibe_mcp_tool_seconds`).

The outcome is `ok`, or the code of the error the agent got: our tool errors all carry `[code]`
(context.py, arguments.py; the SDK's "Error executing tool …: " before it is cut), and only the
codes of domain/errors.py (and `internal`) are used as label values, anything else is `error`; a
call the SDK refuses as a protocol error is `protocol_error`, one that raised in our code (the agent
got -32603) `internal`. A name that is not one of the profile's tools is counted as `unknown`. So
the label values form closed sets, whatever a client sends.

Each call is also logged: tool, outcome, the tool's latency (`tool_ms`) and who (agent, project),
never the arguments' text. Over HTTP these fields join the request's own `http_request` line (one
line per call, not two: a log line costs as much as a small query); a call that came without an
HTTP request (stdio) or a second call in one request writes its own `tool_call` line.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from vibe_ensemble.api.mcp.context import bound
from vibe_ensemble.domain.errors import VibeError
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.logging import LOG_FIELDS, safe_name

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = structlog.get_logger("vibe_ensemble.tools")

_CODE = re.compile(r"\[([a-z_]{1,40})\]")


@functools.cache
def known_codes() -> frozenset[str]:
    """The codes of every VibeError class, and `internal`: the outcomes besides `ok`."""
    codes, todo = {"internal"}, [VibeError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo += cls.__subclasses__()
    return frozenset(codes)


def outcome(result: HandlerResult) -> str:
    """`ok`, or the error code of a tool result with `isError` (see the module's docstring).

    Read off the result as it is (never dumped: that would cost as much as the answer itself).
    """
    if isinstance(result, BaseModel):
        if not getattr(result, "is_error", False):
            return "ok"
        content = getattr(result, "content", None) or [None]
        text = getattr(content[0], "text", "")
    elif isinstance(result, dict) and result.get("isError"):
        content = result.get("content") or [{}]
        text = content[0].get("text", "") if isinstance(content[0], dict) else ""
    else:
        return "ok"
    found = _CODE.search(text) if isinstance(text, str) else None
    return found.group(1) if found and found.group(1) in known_codes() else "error"


def _ours_first(result: HandlerResult, tool: str) -> HandlerResult:
    """A tool error as `[code] message {…}`, whichever layer refused: the SDK puts
    "Error executing tool <tool>: " before a refusal raised in the tool (its results reach this
    middleware as dicts; arguments.py's own refusals have no prefix), and an agent reading errors
    by their leading `[code]` would miss it."""
    prefix = f"Error executing tool {tool}: ["
    if not isinstance(result, dict):
        return result
    content = result.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return result
    text = content[0].get("text")
    if not isinstance(text, str) or not text.startswith(prefix):
        return result
    return {**result, "content": [{**content[0], "text": text[len(prefix) - 1 :]}, *content[1:]]}


def failure(exc: Exception) -> str:
    """The outcome of a call that raised: a JSON-RPC error (the SDK refused the request, or one of our
    layers did as JSON-RPC says) is `protocol_error`; anything else a fault of ours (`internal`: the
    agent got -32603 "Internal server error")."""
    return "protocol_error" if isinstance(exc, MCPError) else "internal"


def cut_off() -> str:
    """The outcome of a call cancelled while it ran: `going_away` when the server is stopping (the
    agent is answered `[going_away]`, api/gate.py), else `cancelled` (its client went away)."""
    call = bound()
    return "going_away" if call is not None and call.services.ctx.hub.closed else "cancelled"


def _tool(ctx: ServerRequestContext[Any, Any], names: frozenset[str]) -> str:
    """The tool a `tools/call` names: one of ours, else `unknown` (a closed set of labels)."""
    name = (ctx.params or {}).get("name")
    return name if isinstance(name, str) and name in names else "unknown"


def observe_tools(tools: Iterable[Callable[..., Any]]) -> ServerMiddleware[Any]:
    """Middleware (outermost) that measures each `tools/call` of these tools."""
    names = frozenset(fn.__name__ for fn in tools)

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        tool = _tool(ctx, names)
        started = time.perf_counter()
        result_outcome = "protocol_error"
        try:
            result = await call_next(ctx)
            result_outcome = outcome(result)
            return result if result_outcome == "ok" else _ours_first(result, tool)
        except Exception as exc:
            result_outcome = failure(exc)
            raise
        except asyncio.CancelledError:
            result_outcome = cut_off()
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.child(metrics.MCP_CALLS, tool, result_outcome).inc()
            metrics.child(metrics.MCP_LATENCY, tool).observe(elapsed)
            fields = {"tool": tool, "outcome": result_outcome, "tool_ms": round(elapsed * 1000, 2)}
            fields.update(who(ctx.params or {}))
            if not _on_request_line(ctx, fields):
                log.info("tool_call", **fields)

    return middleware


def _on_request_line(ctx: ServerRequestContext[Any, Any], fields: dict[str, object]) -> bool:
    """Add the call's fields to its HTTP request's log line (ops/logging.py), when it has one that
    names no other call yet; False when the call must be logged on its own."""
    scope = getattr(ctx.request, "scope", None)
    line = scope.get(LOG_FIELDS) if isinstance(scope, dict) else None
    if not isinstance(line, dict) or "tool" in line:
        return False
    line.update(fields)
    return True


def trace_tools(tools: Iterable[Callable[..., Any]], tracer: Tracer) -> ServerMiddleware[Any]:
    """Middleware (only when tracing is on, ops/tracing.py): a span per `tools/call` of these tools.

    Named `tools/call <tool>`, a child of the request's HTTP span, with the tool, the outcome (`ok` or
    the error code, as on /metrics) and the agent and project: never the arguments or the result.
    It runs outside `observe_tools`, and binds the span's `trace_id` to every log line written
    within, so a call with no HTTP request around it (stdio) is logged with its trace id too.
    """
    from opentelemetry.trace import StatusCode

    names = frozenset(fn.__name__ for fn in tools)

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        tool = _tool(ctx, names)
        with (
            tracer.start_as_current_span(
                f"tools/call {tool}", record_exception=False, set_status_on_exception=False
            ) as span,
            structlog.contextvars.bound_contextvars(trace_id=f"{span.get_span_context().trace_id:032x}"),
        ):
            result_outcome = "protocol_error"
            try:
                result = await call_next(ctx)
                result_outcome = outcome(result)
                return result
            except Exception as exc:
                result_outcome = failure(exc)
                raise
            except asyncio.CancelledError:
                result_outcome = cut_off()
                raise
            finally:
                span.set_attributes(
                    {
                        "mcp.method.name": "tools/call",
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": tool,
                        "vibe.outcome": result_outcome,
                        **{f"vibe.{k}": v for k, v in who(ctx.params or {}).items()},
                    }
                )
                if result_outcome != "ok":
                    span.set_attribute("error.type", result_outcome)
                    span.set_status(StatusCode.ERROR, result_outcome)

    return middleware


def who(params: Mapping[str, Any]) -> dict[str, str]:
    """The agent and project a call acts as: the token's, else the (well-formed) arguments'."""
    call = bound()
    arguments = params.get("arguments")
    given = arguments if isinstance(arguments, dict) else {}
    agent = (call.caller.agent if call else None) or safe_name(given.get("agent"))
    project = safe_name(given.get("project")) or (call.caller.project if call else None)
    return {k: v for k, v in (("agent", agent), ("project", project)) if v}
