"""`build_mcp`: the MCP server of one profile — its tools, the prompts and the `vibe://` resources."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server import MCPServer
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.tools import Tool
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import InMemorySubscriptionBus, SubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, SubscriptionsAcknowledgedNotification
from pydantic import ValidationError

from vibe_ensemble.api import auth, gate
from vibe_ensemble.api.mcp import prompts, protocol, resources
from vibe_ensemble.api.mcp.arguments import MAX_SHOWN, invalid_request, strict_arguments
from vibe_ensemble.api.mcp.compact import compact_tools
from vibe_ensemble.api.mcp.context import bound, direct_results, invalid_params, tool_errors
from vibe_ensemble.api.mcp.observe import observe_tools, trace_tools
from vibe_ensemble.api.mcp.profiles import PROFILES, Profile
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.errors import TooManyOpen
from vibe_ensemble.domain.rules import MAX_NAME
from vibe_ensemble.ops.config import Settings

if TYPE_CHECKING:
    from mcp.server.session import ServerSession
    from opentelemetry.trace import Tracer

INSTRUCTIONS = """\
Vibe Ensemble coordinates a team of coding agents on one code base.
Start with register_agent, then heartbeat: it tells you your unread mail, your
assigned issues and the issues ready to claim; heartbeat again when your status
or activity changes. Every call you make keeps you present; after {window}
without one you show as offline, so between tasks wait for mail with
wait_for_messages (present while it waits) rather than going quiet. Claim an
issue before working on it (claim_issue), comment as you learn, close it with a
resolution. Mail teammates with send_message; read yours with fetch_inbox.
"""


def instructions(offline_after_s: float) -> str:
    """The server's instructions to every client, with the presence window it runs with."""
    return INSTRUCTIONS.format(window=rules.duration(offline_after_s))


def _credential_principal(_: ServerRequestContext[Any, Any]) -> str | None:
    call = bound()
    if call is None or call.caller.credential_id is None:
        return None
    return f"credential:{call.caller.credential_id}"


def _other_methods(recheck_s: float) -> Any:
    """The checks of the methods beside `tools/call`, in one layer: a tool call passes it with two
    comparisons, not an awaited layer per check. And for every method, a request whose params the
    SDK refuses (it checks them after this layer, and says only "Invalid request parameters") is
    refused naming each field and its rule (`arguments.invalid_request`). A `subscriptions/listen`
    stream asks every `recheck_s` whether its credential is still good (`_while_valid`)."""

    async def other_methods(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "prompts/get":
            _check_prompt(ctx.params or {})
        elif ctx.method in UNPAGED and isinstance((ctx.params or {}).get("cursor"), str):
            # These lists come whole (no nextCursor is ever given): a cursor was made up, or is
            # another list's; the SDK answered the first page as if none had been given.
            rule = "this list comes in one page: no cursor is ever returned for it, so none is taken"
            raise invalid_params("cursor", f"not a cursor this server returned; {rule}", rule)
        elif ctx.method == "resources/read":
            return await _read_resource(ctx, call_next)
        elif ctx.method == "subscriptions/listen":
            ctx = _honored_listen(ctx)
            with _feed_slot():  # a listen is a live feed: under the credential's cap of open ones
                async with gate.stepped_aside():  # it waits for others' changes
                    return await _while_valid(ctx, call_next, recheck_s)
        return await _answer(ctx, call_next)

    return other_methods


async def _read_resource(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """`resources/read`; a URI no resource of this server has is refused as every refused input is,
    `[invalid_input] uri: …` naming the resources (the SDK said only `Unknown resource: URI`)."""
    uri = (ctx.params or {}).get("uri")
    if isinstance(uri, str) and (refused := resources.query_problem(uri)):
        raise invalid_params("uri", *refused)
    try:
        return await _answer(ctx, call_next)
    except MCPError as exc:
        if exc.error.code != INVALID_PARAMS or not exc.error.message.startswith("Unknown resource:"):
            raise
        uri = str((ctx.params or {}).get("uri", ""))
        rule = "must be one of this server's resources: " + ", ".join(resources.RESOURCES)
        raise invalid_params("uri", f"no resource at {uri[:200]!r}; {rule}", rule) from None


UNPAGED = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list"})


async def _while_valid(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext, recheck_s: float
) -> HandlerResult:
    """A listen stream stays open only while its token does: revoked or expired, the stream ends
    within `recheck_s` with `[unauthenticated]`, as the SSE and WebSocket feeds end at their next
    keep-alive (a stream held open otherwise went on hearing changes, and pinging, for ever). It
    also ends, with `[going_away]`, as soon as the server begins to stop, as the feeds do (it was
    held open until the end of the shutdown's grace, then cut off mid-stream)."""
    call = bound()
    still_valid = None if call is None else call.still_valid
    if call is None or still_valid is None:  # stdio: the process is its own token's holder
        return await _answer(ctx, call_next)
    hub = call.services.ctx.hub
    answered: list[HandlerResult] = []
    ended: list[str] = []  # why the stream was ended, when it was

    async def watch(scope: anyio.CancelScope) -> None:
        while True:
            with anyio.move_on_after(recheck_s):
                await hub.until_closed()
            if hub.closed:
                ended.append("going_away")
                break
            if not await still_valid():
                ended.append("unauthenticated")
                break
        scope.cancel()

    refused: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        try:
            answered.append(await _answer(ctx, call_next))
        except Exception as exc:  # raised below as itself: out of the group it would be an ExceptionGroup
            refused = exc
        group.cancel_scope.cancel()
    if refused is not None:
        raise refused
    if answered:
        return answered[0]
    if ended == ["going_away"]:
        raise MCPError(
            auth.REFUSED,
            "[going_away] the server is shutting down: this stream has ended; listen again (to another "
            "replica)",
            {"code": "going_away"},
        )
    raise MCPError(
        INVALID_REQUEST,
        "[unauthenticated] the token was revoked or has expired: this stream has ended",
        {"code": "unauthenticated"},
    )


async def _answer(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    try:
        return await call_next(ctx)
    except MCPError as exc:
        unknown = exc.error.data
        if exc.error.code != METHOD_NOT_FOUND or not isinstance(unknown, str) or len(unknown) <= MAX_SHOWN:
            raise
        # The SDK names the method it has not as it came, however long: cut, as a tool's name is
        raise MCPError(METHOD_NOT_FOUND, exc.error.message, unknown[:MAX_SHOWN] + "…") from None
    except ValidationError as exc:
        # Only the SDK's check of the request lets one through: a tool's becomes a tool error, a
        # prompt's or a resource's one of `context.protocol_errors`.
        raise invalid_request(ctx.method, exc) from exc


@contextlib.contextmanager
def _feed_slot() -> Iterator[None]:
    """One of the caller's open-feed slots (auth/concurrency.py) for as long as its listen stream is
    open; over the cap, the listen is refused with `[too_many_open]`."""
    call = bound()
    if call is None:
        yield
        return
    try:
        slot = call.services.ctx.open_limits.take("feed", call.caller.credential_id)
    except TooManyOpen as exc:
        raise MCPError(
            INVALID_REQUEST, f"[{exc.code}] {exc.message}", {"code": exc.code, **exc.details}
        ) from exc
    try:
        yield
    finally:
        slot.release()


# Where a listen stream's acknowledgement says what it does not honor, and why: the ack's `_meta` (the
# protocol's place for what the filter cannot say; the filter itself lists only what is honored)
NOT_HONORED_META = "vibe-ensemble/notHonored"
NEVER_CHANGES = {
    "toolsListChanged": "a token's tools never change while it is served (its tool profile is fixed)",
    "promptsListChanged": "the prompts never change while the server runs",
}


def _honored_listen(ctx: ServerRequestContext[Any, Any]) -> ServerRequestContext[Any, Any]:
    """`subscriptions/listen`: honor only what this server pushes. A project-scoped token hears only
    its own project's `vibe://` resources; a URI whose changes are never announced (an inbox, a query,
    no resource of ours: `resources.unpushed`) and the list changes that never happen (tools,
    prompts) are left out of the filter the SDK honors. The acknowledgement lists what is honored,
    and its `_meta` (NOT_HONORED_META) each request left out with the reason."""
    params = dict(ctx.params or {})
    wanted = params.get("notifications")
    if not isinstance(wanted, dict):
        return ctx  # the SDK refuses it, naming the field
    wanted = dict(wanted)
    call = bound()
    project = None if call is None else call.caller.project
    refused: list[dict[str, str]] = []
    for flag, reason in NEVER_CHANGES.items():
        if wanted.get(flag) is True:
            wanted.pop(flag)
            refused.append({"notification": flag, "reason": reason})
    uris = wanted.get("resourceSubscriptions")
    if isinstance(uris, list):
        kept = []
        for uri in uris:
            if not isinstance(uri, str):
                kept.append(uri)  # the SDK refuses it, naming the field
                continue
            why = resources.unpushed(uri)
            if why is None and project is not None and not resources.in_scope(uri, project):
                why = f"not a resource of this token's project ({project})"
            if why is None:
                kept.append(uri)
            else:
                refused.append({"uri": uri[:200], "reason": why})
        wanted["resourceSubscriptions"] = kept
    if not refused:
        return ctx
    params["notifications"] = wanted
    session = typing.cast("ServerSession", _NotingAck(ctx.session, refused))
    return dataclasses.replace(ctx, params=params, session=session)


class _NotingAck:
    """A listen's session whose acknowledgement (the stream's first frame, sent by the SDK's handler)
    carries in its `_meta` what the stream does not honor and why; everything else passes through."""

    def __init__(self, session: Any, refused: list[dict[str, str]]) -> None:
        self._session = session
        self._refused = refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def send_notification(self, notification: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(notification, SubscriptionsAcknowledgedNotification):
            params = notification.params
            meta = {**(params.meta or {}), NOT_HONORED_META: self._refused}
            notification = notification.model_copy(
                update={"params": params.model_copy(update={"meta": meta})}
            )
        return await self._session.send_notification(notification, *args, **kwargs)


def _check_prompt(params: Mapping[str, Any]) -> None:
    """`prompts/get` of a prompt this server has not, or with an argument the prompt does not take:
    invalid params naming the field and the rule (the SDK answered "Internal server error" and
    logged a traceback)."""
    name = params.get("name")
    if name is None:
        rule = f"required: the prompt's name, one of {', '.join(prompts.NAMES)}"
        raise invalid_params("name", rule, rule)
    if name not in prompts.NAMES:
        shown = repr(name[:64]) if isinstance(name, str) else "a non-string"
        rule = f"not a prompt of this server; the prompts are: {', '.join(prompts.NAMES)}"
        raise invalid_params("name", f"unknown prompt {shown}; {rule}", rule)
    arguments = params.get("arguments") or {}
    accepted = prompts.ARGUMENTS[name]
    for key, value in arguments.items() if isinstance(arguments, dict) else ():
        if key not in accepted:
            rule = f"not an argument of {name}; it takes: {', '.join(accepted)}"
            raise invalid_params(str(key)[:64], rule, rule)
        if not isinstance(value, str):
            raise invalid_params(key, "must be a string", "must be a string")
        if len(value) > MAX_NAME:  # each is a name: an agent's or a project's
            rule = f"must be at most {MAX_NAME} characters (got {len(value)})"
            raise invalid_params(key, rule, rule)


@functools.cache
def registered_tools() -> dict[str, Tool]:
    """Every tool's registration (argument model, compact schemas), by name, made once per process.

    Making one costs pydantic a model and its schemas; every server of every profile (and
    `strict_arguments`) shares these, so none is made twice.
    """
    tools = []
    for fn in PROFILES["full"]:
        tool = Tool.from_function(tool_errors(direct_results(fn)))
        if answers_records(fn):
            # `direct_results` writes its answer from the record's own type, so the SDK's check of that
            # answer against the schema made from the same type could only repeat it (a tenth of an
            # inbox's cost). The schema is still published, and clients check results against it.
            tool.fn_metadata.output_model = None
        tools.append(tool)
    compact_tools(tools)
    return {tool.name: tool for tool in tools}


def answers_records(fn: Any) -> bool:
    """Whether `fn` returns a record or a list of records: what `direct_results` answers itself."""
    answer = typing.get_type_hints(fn).get("return")
    if typing.get_origin(answer) is list:
        (answer,) = typing.get_args(answer)
    return isinstance(answer, type) and dataclasses.is_dataclass(answer)


def build_mcp(
    settings: Settings,
    *,
    profile: Profile = "core",
    subscriptions: SubscriptionBus | None = None,
    tracer: Tracer | None = None,
    pushes: bool = True,
) -> MCPServer:
    """The MCP server with the tools of `profile`; each call acts as the bound `CallContext`.

    `subscriptions` is the bus `subscriptions/listen` streams (and `resources/subscribe` on stdio)
    hear resource changes on; without one the server has its own, which nothing feeds. With a
    `tracer` (tracing on, ops/tracing.py) each tool call is also a span. `pushes`: the connection
    carries notifications (stdio), so `resources/subscribe` is served; stateless HTTP does not.
    """
    bus = subscriptions if subscriptions is not None else InMemorySubscriptionBus()
    registered = registered_tools()
    tools = [registered[fn.__name__] for fn in PROFILES[profile]]
    traced = [] if tracer is None else [trace_tools(PROFILES[profile], tracer)]
    mcp = MCPServer(
        settings.server_name,
        title="Vibe Ensemble",
        instructions=instructions(settings.offline_after_s),
        version="0.1.0",
        log_level="WARNING",
        subscriptions=bus,
        # Replicas share the key, so a multi-round-trip request may come back to any of them;
        # sealed state is bound to the credential that started it.
        request_state_security=RequestStateSecurity(
            keys=[settings.request_state_key], bind_principal=_credential_principal
        ),
        middleware=[
            *traced,
            observe_tools(PROFILES[profile]),
            _other_methods(settings.feed_keepalive_s),
            strict_arguments(tools),
        ],
        tools=tools,
    )
    # The SDK's own span per message goes to the global tracer, which we never set (ours are
    # `trace_tools` and the HTTP spans, ops/tracing.py): a no-op that cost 3% of a tool call.
    # The SDK documents dropping it from the list as the way to opt out.
    mcp.middleware[:] = [m for m in mcp.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    _check_param_headers_where_declared(mcp, tools)
    prompts.register(mcp)
    resources.register(mcp)
    protocol.register(mcp, bus, default_project=settings.default_project, subscribe=pushes)
    return mcp


def _check_param_headers_where_declared(mcp: MCPServer, tools: list[Tool]) -> None:
    """The SDK checks a call's `Mcp-Param-*` headers against the `x-mcp-header` declarations in the
    tool's input schema by walking the whole schema twice per call (3-4% of a call's time under
    cProfile). None of our tools declares one, so that walk can find nothing to check: the schema
    lookup it starts from answers None (no check, as the SDK does for a tool it does not know) for
    every tool whose schema holds no declaration. A tool that declares one is still checked in full."""
    server = mcp._lowlevel_server  # the SDK offers no public way to reach the lookup
    lookup = server.get_tool_input_schema
    declaring = {tool.name for tool in tools if "x-mcp-header" in json.dumps(tool.parameters)}
    if lookup is not None:
        server.get_tool_input_schema = lambda name: lookup(name) if name in declaring else None


def transport_security() -> TransportSecuritySettings:
    """The SDK's own Host/Origin check is off: `api.hosts.HostGuard` checks every route, /mcp included."""
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)
