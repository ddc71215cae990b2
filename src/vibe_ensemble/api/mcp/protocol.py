"""The generic MCP methods beside tools, prompts and resource reads.

- `logging/setLevel` is accepted (the server sends no log notifications, so there is nothing
  to filter);
- `resources/list` lists the caller's project's concrete resources (`resources.concrete`);
- `resources/subscribe` / `unsubscribe` for clients on the protocols before 2026-07-28: on a
  connection that can carry notifications (stdio, `vibe-ensemble mcp`), each change to a
  subscribed URI is sent as `notifications/resources/updated`. Stateless HTTP has no channel
  for it, so there the methods are not served and the capabilities say so (`subscribe: false`
  before 2026-07-28; 2026-07-28 clients use `subscriptions/listen`);
- `completion/complete` for the prompts' and resource templates' arguments.

(Tool results are compact JSON text from the start: `context.direct_results`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent

from vibe_ensemble.api.mcp import prompts, resources
from vibe_ensemble.api.mcp.context import acting, invalid_params
from vibe_ensemble.domain.errors import VibeError
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.briefings import BRIEFING_OPS

MAX_COMPLETIONS = 100


async def _set_level(_: ServerRequestContext[Any, Any], __: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


class Subscriptions:
    """`resources/subscribe` on the one connection of a stdio process, fed from the change bus."""

    def __init__(self, bus: SubscriptionBus) -> None:
        self.sessions: dict[str, ServerSession] = {}  # URI -> the session that asked (stdio: one)
        self._sending: set[asyncio.Task[None]] = set()
        self._bus = bus
        self._leave: Callable[[], None] | None = None  # listening only while a URI is subscribed

    def _changed(self, event: ServerEvent) -> None:
        if isinstance(event, ResourceUpdated) and event.uri in self.sessions:
            task = asyncio.get_running_loop().create_task(
                self.sessions[event.uri].send_resource_updated(event.uri)
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        if not ctx.session.can_send_request:
            raise MCPError(
                types.INVALID_REQUEST,
                "resources/subscribe needs a connection that carries notifications; this one is stateless "
                "HTTP: use subscriptions/listen (protocol 2026-07-28), the event feeds, or stdio",
            )
        _, caller = acting()
        uri = str(params.uri)
        if not uri.startswith("vibe://projects") or (
            caller.project is not None and not resources.in_scope(uri, caller.project)
        ):
            raise MCPError(
                types.INVALID_PARAMS, f"uri: not a vibe:// resource of this token's project: {uri}"
            )
        reason = resources.unpushed(uri)  # what never changes is not subscribed to without a word
        if reason is not None:
            raise invalid_params("uri", f"{reason} (got {uri[:200]!r})", reason)
        self.sessions[uri] = ctx.session
        if self._leave is None:
            self._leave = self._bus.subscribe(self._changed)
        return types.EmptyResult()

    async def unsubscribe(
        self, _: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self.sessions.pop(str(params.uri), None)
        if not self.sessions and self._leave is not None:
            self._leave()
            self._leave = None
        return types.EmptyResult()


def _list_resources(default_project: str) -> Any:
    async def handler(
        _ctx: ServerRequestContext[Any, Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        _, caller = acting()
        project = caller.project_slug(None, default_project)
        return types.ListResourcesResult(resources=resources.concrete(project, caller.agent))

    return handler


async def _candidates(ref: Any, name: str, known: dict[str, str]) -> list[str]:
    """What the caller may read: the projects it sees, the agents it may act as (an inbox is read as
    its agent, a briefing is an agent's: a bound token's own, a team token's role's), the issues and
    knowledge entries of the project. A read it may not do at all completes to nothing."""
    services, caller = acting()
    project = known.get("project") or None
    if name == "project":
        return [p.slug for p in await services.projects.list(caller)]
    if name == "agent":
        ops = BRIEFING_OPS if isinstance(ref, types.PromptReference) else (Op.MESSAGE_READ,)
        return [a.name for a in await services.agents.actable(caller, project=project, ops=ops)]
    uri = getattr(ref, "uri", "")
    if name == "id" and "/issues/" in uri:
        page = await services.issues.list(caller, project=project, limit=MAX_COMPLETIONS)
        return [str(i.id) for i in reversed(page.items)]
    if name == "id" and "/knowledge/" in uri:
        return [
            str(k.id) for k in await services.knowledge.list(caller, project=project, limit=MAX_COMPLETIONS)
        ]
    return []


def _arguments_of(
    ref: types.PromptReference | types.ResourceTemplateReference,
) -> tuple[str, tuple[str, ...]]:
    """The prompt or resource template `ref` names, and the arguments it takes; invalid params naming
    `ref.name` (`ref.uri`) when this server has no such prompt (template), as `prompts/get` refuses."""
    if isinstance(ref, types.PromptReference):
        if ref.name not in prompts.NAMES:
            rule = f"not a prompt of this server; the prompts are: {', '.join(prompts.NAMES)}"
            raise invalid_params("ref.name", f"unknown prompt {ref.name[:64]!r}; {rule}", rule)
        return ref.name, prompts.ARGUMENTS[ref.name]
    if ref.uri not in resources.TEMPLATE_ARGUMENTS:
        templates = ", ".join(resources.TEMPLATE_ARGUMENTS)
        rule = f"not a resource template of this server; the templates are: {templates}"
        raise invalid_params("ref.uri", f"unknown resource template {ref.uri[:200]!r}; {rule}", rule)
    return ref.uri, resources.TEMPLATE_ARGUMENTS[ref.uri]


def _check_argument(field: str, name: str, of: str, accepted: tuple[str, ...]) -> None:
    if name not in accepted:
        rule = f"not an argument of {of}; it takes: {', '.join(accepted)}"
        raise invalid_params(field, f"{name[:64]!r} is {rule}", rule)


async def complete(
    _: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
) -> types.CompleteResult:
    """Values for a prompt's or resource template's argument that start with what was typed, in the
    caller's project (or the `project` already chosen): project slugs, agent names, issue and
    knowledge ids. What the caller may not read completes to nothing; a prompt, template or argument
    this server has not is refused (invalid params naming it), never answered with nothing."""
    of, accepted = _arguments_of(params.ref)
    _check_argument("argument.name", params.argument.name, of, accepted)
    known = dict(params.context.arguments or {}) if params.context is not None else {}
    for name in known:
        _check_argument("context.arguments", name, of, accepted)
    try:
        values = await _candidates(params.ref, params.argument.name, known)
    except VibeError:
        values = []
    matching = [v for v in values if v.startswith(params.argument.value)]
    return types.CompleteResult(
        completion=types.Completion(
            values=matching[:MAX_COMPLETIONS], total=len(matching), has_more=len(matching) > MAX_COMPLETIONS
        )
    )


def register(mcp: MCPServer, bus: SubscriptionBus, *, default_project: str, subscribe: bool) -> None:
    """Serve the methods above on `mcp` (changes for `resources/subscribe` come from `bus`);
    `resources/subscribe` only where `subscribe` (a connection that carries notifications)."""
    # The SDK offers no public way to add a spec method's handler to an MCPServer.
    server = mcp._lowlevel_server
    subscriptions = Subscriptions(bus)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, _set_level)
    server.add_request_handler(
        "resources/list", types.PaginatedRequestParams, _list_resources(default_project)
    )
    if subscribe:  # served or not, the legacy capabilities' `subscribe` says which
        server.add_request_handler(
            "resources/subscribe", types.SubscribeRequestParams, subscriptions.subscribe
        )
        server.add_request_handler(
            "resources/unsubscribe", types.UnsubscribeRequestParams, subscriptions.unsubscribe
        )
    server.add_request_handler("completion/complete", types.CompleteRequestParams, complete)
