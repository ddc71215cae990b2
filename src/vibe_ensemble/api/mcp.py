"""The agents' front door: MCP tools over Streamable HTTP (`/mcp`) and stdio.

Every tool is a thin call into the service layer. The caller comes from the
bearer token (checked by `MCPEndpoint` before the SDK sees the request) or, over
stdio, from the token the process was started with.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import structlog
from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import SubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, Importance, IssueStatus, Priority
from vibe_ensemble.domain.errors import PermissionDenied, RateLimited, Unauthenticated, VibeError
from vibe_ensemble.domain.models import (
    Agent,
    ClosedIssue,
    Comment,
    HeartbeatResult,
    Inbox,
    Issue,
    IssueDetail,
    IssuePage,
    Message,
    Project,
)
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import Services
from vibe_ensemble.services.issues import UNSET

CALLER_KEY = "vibe.caller"
SERVICES_KEY = "vibe.services"
RETRY_AFTER_KEY = "vibe.retry_after"  # set when the caller's rate limit is spent: tools refuse

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

INSTRUCTIONS = """\
Vibe Ensemble coordinates a team of coding agents on one code base.
Start with register_agent, then call heartbeat every few minutes: it tells you
your unread mail, your assigned issues and the issues ready to claim. Claim an
issue before working on it (claim_issue), comment as you learn, close it with a
resolution. Mail teammates with send_message; read yours with fetch_inbox.
"""

# Shared parameter types, documented once.
ProjectArg = Annotated[str | None, Field(description="Project slug; default: the token's or the server's.")]
AgentArg = Annotated[
    str | None,
    Field(description="Team tokens only: the agent to act as (a bound token is its agent)."),
]
IssueId = Annotated[int, Field(description="The issue's numeric id.", ge=1, le=MAX_ID)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
MessageIds = Annotated[
    list[Id], Field(description="Message ids from your inbox.", min_length=1, max_length=500)
]


def _scope_of(ctx: Context) -> Mapping[str, Any]:
    """The ASGI scope of the HTTP request behind this call (empty over stdio)."""
    request = ctx.request_context.request
    scope = None if request is None else getattr(request, "scope", None)
    return scope if isinstance(scope, Mapping) else {}


def _caller_of(ctx: Context, fixed: Caller | None) -> Caller:
    """The caller: the one authenticated for this HTTP request, else the stdio process's own."""
    scope = _scope_of(ctx)
    caller = scope.get(CALLER_KEY)
    if caller is None:
        caller = fixed
    if not isinstance(caller, Caller):
        raise ToolError("[unauthenticated] no credential: connect with a bearer token")
    retry_after = scope.get(RETRY_AFTER_KEY)
    if isinstance(retry_after, float):
        raise RateLimited(
            f"rate limit of the {caller.role.value} role reached: retry in {retry_after:.1f}s", retry_after
        )
    return caller


async def _audit_denial(call: tuple[Any, ...], exc: PermissionDenied) -> None:
    """Write a refusal to the audit log (over HTTP; the stdio process is its own token's holder)."""
    ctx = next((a for a in call if isinstance(a, Context)), None)
    if ctx is None:
        return
    scope = _scope_of(ctx)
    services, caller = scope.get(SERVICES_KEY), scope.get(CALLER_KEY)
    if not isinstance(services, Services) or not isinstance(caller, Caller):
        return
    try:
        await services.audit.denied(caller, exc)
    except Exception:
        log.exception("audit_failed", action="access.denied")


def _request_caller(request: Any) -> Caller | None:
    caller = None if request is None else getattr(request, "scope", {}).get(CALLER_KEY)
    return caller if isinstance(caller, Caller) else None


def _credential_principal(ctx: ServerRequestContext[Any, Any]) -> str | None:
    caller = _request_caller(ctx.request)
    return None if caller is None or caller.credential_id is None else f"credential:{caller.credential_id}"


class _ScopedListen:
    """`subscriptions/listen`: a project-scoped token hears only its own project's `vibe://` resources."""

    def __init__(self, stdio_caller: Caller | None) -> None:
        self.stdio_caller = stdio_caller

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        caller = _request_caller(ctx.request) or self.stdio_caller
        if ctx.method != "subscriptions/listen" or caller is None or caller.project is None:
            return await call_next(ctx)
        params = dict(ctx.params or {})
        wanted = dict(params.get("notifications") or {})
        uris = wanted.get("resourceSubscriptions")
        if isinstance(uris, list):
            wanted["resourceSubscriptions"] = [u for u in uris if _uri_in_scope(u, caller.project)]
            params["notifications"] = wanted
        return await call_next(dataclasses.replace(ctx, params=params))


def _uri_in_scope(uri: object, project: str) -> bool:
    """True for `vibe://projects` (the list, already filtered per caller) and this project's URIs."""
    if not isinstance(uri, str):
        return False
    if uri == "vibe://projects":
        return True
    prefix = f"vibe://projects/{project}"
    return uri == prefix or uri.startswith(prefix + "/") or uri.startswith(prefix + "?")


def _tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn service errors into MCP tool errors an agent can read and act on; never leak internals."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except VibeError as exc:
            if isinstance(exc, PermissionDenied):
                await _audit_denial((*args, *kwargs.values()), exc)
            detail = f" {json.dumps(exc.details, default=str)}" if exc.details else ""
            raise ToolError(f"[{exc.code}] {exc.message}{detail}") from exc
        except ToolError:
            raise
        except Exception as exc:
            log.exception("tool_failed", tool=fn.__name__)
            raise ToolError("[internal] internal server error") from exc

    return wrapper


def build_mcp(
    services: Services,
    settings: Settings,
    *,
    profile: Literal["core", "full"] = "core",
    stdio_caller: Caller | None = None,
    subscriptions: SubscriptionBus | None = None,
) -> MCPServer:
    """The MCP server with the tools of `profile`. Over stdio, every call acts as `stdio_caller`.

    `subscriptions` is the bus `subscriptions/listen` streams hear resource changes on.
    """

    def _caller(ctx: Context) -> Caller:
        return _caller_of(ctx, stdio_caller)

    mcp = MCPServer(
        settings.server_name,
        title="Vibe Ensemble",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        log_level="WARNING",
        subscriptions=subscriptions,
        # Replicas share the key, so a multi-round-trip request may come back to any of them;
        # sealed state is bound to the credential that started it.
        request_state_security=RequestStateSecurity(
            keys=[settings.request_state_key], bind_principal=_credential_principal
        ),
        middleware=[_ScopedListen(stdio_caller)],
    )
    tool = mcp.tool

    # --- agents -----------------------------------------------------------------
    @tool()
    @_tool_errors
    async def register_agent(
        ctx: Context,
        role: Annotated[
            AgentRole, Field(description="coordinator plans and delegates; worker does issues.")
        ] = (AgentRole.WORKER),
        name: Annotated[
            str | None, Field(description="Your name; omit for a memorable generated one.")
        ] = None,
        capabilities: Annotated[
            list[str] | None, Field(description="What you are good at, e.g. ['python', 'frontend'].")
        ] = None,
        program: Annotated[str, Field(description="Your client, e.g. 'claude-code'.")] = "",
        model: Annotated[str, Field(description="Your model, e.g. 'claude-sonnet'.")] = "",
        description: Annotated[str, Field(description="One line on what you are here to do.")] = "",
        project: ProjectArg = None,
    ) -> Agent:
        """Register yourself (or re-attach to your existing registration). Call this first."""
        return await services.agents.register(
            _caller(ctx),
            project=project,
            name=name,
            role=role,
            capabilities=capabilities,
            program=program,
            model=model,
            description=description,
        )

    @tool()
    @_tool_errors
    async def heartbeat(
        ctx: Context,
        status: Annotated[AgentStatus | None, Field(description="idle, working or blocked.")] = None,
        activity: Annotated[str | None, Field(description="What you are doing right now, in a line.")] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> HeartbeatResult:
        """Say you are alive; returns unread mail, your assigned issues, ready issues and expiring leases."""
        return await services.agents.heartbeat(
            _caller(ctx), project=project, agent=agent, status=status, activity=activity
        )

    @tool()
    @_tool_errors
    async def list_agents(
        ctx: Context,
        role: Annotated[AgentRole | None, Field(description="Only agents of this role.")] = None,
        status: Annotated[AgentStatus | None, Field(description="Only agents in this status.")] = None,
        include_retired: Annotated[bool, Field(description="Also list retired agents.")] = False,
        project: ProjectArg = None,
    ) -> list[Agent]:
        """See who is in the project (role, status, activity) before you assign or message someone."""
        return await services.agents.list(
            _caller(ctx), project=project, role=role, status=status, include_retired=include_retired
        )

    # --- issues -----------------------------------------------------------------
    @tool()
    @_tool_errors
    async def create_issue(
        ctx: Context,
        title: Annotated[str, Field(description="Short imperative summary (at most 200 characters).")],
        body: Annotated[str, Field(description="Markdown: context, acceptance criteria.")] = "",
        priority: Annotated[Priority, Field(description="p0 (urgent) to p3 (someday).")] = Priority.P2,
        labels: Annotated[list[str] | None, Field(description="Topics or skills, e.g. ['api'].")] = None,
        depends_on: Annotated[
            list[Id] | None, Field(description="Ids of issues that must finish first.", max_length=100)
        ] = None,
        parent: Annotated[Id | None, Field(description="Id of the parent issue (epic).")] = None,
        assignee: Annotated[str | None, Field(description="Agent to assign (coordinators).")] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Issue:
        """Record a unit of work someone should do (a task, a bug, a follow-up you found)."""
        return await services.issues.create(
            _caller(ctx),
            project=project,
            agent=agent,
            title=title,
            body=body,
            priority=priority,
            labels=labels,
            depends_on=depends_on,
            parent=parent,
            assignee=assignee,
        )

    @tool()
    @_tool_errors
    async def list_issues(
        ctx: Context,
        status: Annotated[IssueStatus | None, Field(description="Only issues in this status.")] = None,
        assignee: Annotated[str | None, Field(description="Only issues assigned to this agent.")] = None,
        label: Annotated[str | None, Field(description="Only issues with this label.")] = None,
        ready: Annotated[
            bool | None, Field(description="true: only issues ready to claim, best first.")
        ] = None,
        query: Annotated[str | None, Field(description="Text to find in title or body.")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Page size.")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
        project: ProjectArg = None,
    ) -> IssuePage:
        """Find issues: what is ready, what someone works on, what carries a label. Paginated."""
        return await services.issues.list(
            _caller(ctx),
            project=project,
            status=status,
            assignee=assignee,
            label=label,
            ready=ready,
            query=query,
            limit=limit,
            cursor=cursor,
        )

    @tool()
    @_tool_errors
    async def get_issue(ctx: Context, id: IssueId, project: ProjectArg = None) -> IssueDetail:
        """Read an issue in full (comments, dependencies, dependants) before you work on or discuss it."""
        return await services.issues.get(_caller(ctx), id, project=project)

    @tool()
    @_tool_errors
    async def update_issue(
        ctx: Context,
        id: IssueId,
        title: Annotated[str | None, Field(description="New title.")] = None,
        body: Annotated[str | None, Field(description="New body (replaces it).")] = None,
        status: Annotated[IssueStatus | None, Field(description="e.g. blocked, review.")] = None,
        priority: Annotated[Priority | None, Field(description="p0 (urgent) to p3.")] = None,
        labels: Annotated[list[str] | None, Field(description="Replaces the labels.")] = None,
        depends_on: Annotated[
            list[Id] | None, Field(description="Replaces the dependencies.", max_length=100)
        ] = None,
        assignee: Annotated[str | None, Field(description="Agent to assign; '' unassigns.")] = None,
        expected_version: Annotated[
            int | None,
            Field(
                description="Fail with a conflict unless the issue is still at this version.", ge=0, le=MAX_ID
            ),
        ] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Issue:
        """Change fields of an issue. Pass expected_version to avoid overwriting someone else's change."""
        return await services.issues.update(
            _caller(ctx),
            id,
            project=project,
            agent=agent,
            title=title,
            body=body,
            status=status,
            priority=priority,
            labels=labels,
            depends_on=depends_on,
            assignee=UNSET if assignee is None else (assignee or None),
            expected_version=expected_version,
        )

    @tool()
    @_tool_errors
    async def claim_issue(
        ctx: Context,
        id: Annotated[
            int | None,
            Field(description="Issue to claim; omit to claim the best ready one.", ge=1, le=MAX_ID),
        ] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Issue:
        """Atomically assign an issue to yourself before working on it. Exactly one claimer wins."""
        return await services.issues.claim(_caller(ctx), id, project=project, agent=agent)

    @tool()
    @_tool_errors
    async def comment_issue(
        ctx: Context,
        id: IssueId,
        body: Annotated[str, Field(description="Markdown comment: progress, findings, questions.")],
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Comment:
        """Tell others on an issue what you found, decided or need: progress, findings, questions."""
        return await services.issues.comment(_caller(ctx), id, body, project=project, agent=agent)

    @tool()
    @_tool_errors
    async def close_issue(
        ctx: Context,
        id: IssueId,
        resolution: Annotated[str, Field(description="What was done (or why not).")],
        status: Annotated[
            Literal["done", "closed"], Field(description="done: completed; closed: dropped.")
        ] = "done",
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> ClosedIssue:
        """When an issue is done (or dropped), close it with a resolution; lists dependants now ready."""
        return await services.issues.close(
            _caller(ctx), id, resolution, status=IssueStatus(status), project=project, agent=agent
        )

    # --- mail -------------------------------------------------------------------
    @tool()
    @_tool_errors
    async def send_message(
        ctx: Context,
        subject: Annotated[str, Field(description="One line.")],
        body: Annotated[str, Field(description="Markdown.")],
        to: Annotated[list[str] | None, Field(description="Agent names.")] = None,
        to_role: Annotated[AgentRole | None, Field(description="Every active agent of this role.")] = None,
        broadcast: Annotated[bool, Field(description="Every active agent in the project.")] = False,
        thread_id: Annotated[str | None, Field(description="Reply in this thread.")] = None,
        importance: Annotated[Importance, Field(description="low, normal, high or urgent.")] = (
            Importance.NORMAL
        ),
        ack_required: Annotated[bool, Field(description="Ask recipients to acknowledge.")] = False,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Message:
        """Tell teammates something: to agents, a role, or everyone. Stored before this returns."""
        return await services.messages.send(
            _caller(ctx),
            project=project,
            agent=agent,
            subject=subject,
            body=body,
            to=to,
            to_role=to_role,
            broadcast=broadcast,
            thread_id=thread_id,
            importance=importance,
            ack_required=ack_required,
        )

    @tool()
    @_tool_errors
    async def fetch_inbox(
        ctx: Context,
        unread_only: Annotated[bool, Field(description="Only mail you have not read.")] = False,
        since_id: Annotated[int, Field(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
        limit: Annotated[int, Field(ge=1, le=500, description="Page size.")] = 50,
        mark_read: Annotated[bool, Field(description="Mark the returned messages read.")] = False,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Inbox:
        """Your mail, oldest first (newest last). Does not mark anything read unless mark_read is true."""
        return await services.messages.fetch_inbox(
            _caller(ctx),
            project=project,
            agent=agent,
            unread_only=unread_only,
            since_id=since_id,
            limit=limit,
            mark_read=mark_read,
        )

    @tool()
    @_tool_errors
    async def mark_read(
        ctx: Context, ids: MessageIds, agent: AgentArg = None, project: ProjectArg = None
    ) -> list[int]:
        """After reading mail fetched without mark_read, mark it read."""
        return await services.messages.mark_read(_caller(ctx), ids, project=project, agent=agent)

    @tool()
    @_tool_errors
    async def acknowledge_messages(
        ctx: Context, ids: MessageIds, agent: AgentArg = None, project: ProjectArg = None
    ) -> list[int]:
        """Confirm you got mail that asks for it (ack_required); also marks it read."""
        return await services.messages.acknowledge(_caller(ctx), ids, project=project, agent=agent)

    @tool()
    @_tool_errors
    async def wait_for_messages(
        ctx: Context,
        timeout_s: Annotated[float, Field(description="Give up after this many seconds (at most 60).")] = 30,
        since_id: Annotated[int, Field(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
        mark_read: Annotated[bool, Field(description="Mark the returned messages read.")] = False,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> Inbox:
        """Wait for mail instead of polling fetch_inbox.

        Returns your unread mail as soon as there is any (sent through any server), or empty at the timeout.
        """
        return await services.live.wait_for_messages(
            _caller(ctx),
            project=project,
            agent=agent,
            timeout_s=timeout_s,
            since_id=since_id,
            mark_read=mark_read,
        )

    # The workspace module builds on this one's helpers, so it is imported here, not at the top.
    from vibe_ensemble.api.mcp_compact import compact_tool_schemas
    from vibe_ensemble.api.mcp_workspace import register_workspace

    register_workspace(mcp, services, _caller)
    if profile == "full":
        _add_admin_tools(mcp, services, _caller)
    compact_tool_schemas(mcp)
    return mcp


def _add_admin_tools(mcp: MCPServer, services: Services, _caller: Callable[[Context], Caller]) -> None:
    @mcp.tool()
    @_tool_errors
    async def create_project(
        ctx: Context,
        slug: Annotated[str, Field(description="Lowercase id, e.g. 'web-app'.")],
        name: Annotated[str | None, Field(description="Display name; default: the slug.")] = None,
        description: Annotated[str, Field(description="What the project is.")] = "",
        repo: Annotated[str, Field(description="Repository path or URL.")] = "",
    ) -> Project:
        """Start coordinating a new code base: create its project (admin)."""
        return await services.projects.create(
            _caller(ctx), slug=slug, name=name, description=description, repo=repo
        )

    @mcp.tool()
    @_tool_errors
    async def list_projects(ctx: Context) -> list[Project]:
        """List the projects this token can see, to pick the `project` argument of other tools."""
        return await services.projects.list(_caller(ctx))

    @mcp.tool()
    @_tool_errors
    async def retire_agent(
        ctx: Context,
        name: Annotated[str, Field(description="The agent to retire.")],
        reason: Annotated[str, Field(description="Why, for the record.")] = "",
        project: ProjectArg = None,
    ) -> Agent:
        """Retire an agent: offline, leases released, its in-progress issues reopened (coordinators)."""
        return await services.agents.retire(_caller(ctx), name=name, project=project, reason=reason)


class MCPEndpoint:
    """`/mcp`: authenticate the bearer token, then hand the request to the profile's MCP app."""

    def __init__(self, services: Services, apps: Mapping[str, ASGIApp], default_profile: str) -> None:
        self.services = services
        self.apps = apps
        self.default_profile = default_profile

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        client = scope.get("client")
        remote = str(client[0]) if client else ""
        try:
            token = token.strip() if scheme.lower() == "bearer" else ""
            caller = await self.services.tokens.authenticate(token, remote=remote, throttle=False)
        except Unauthenticated as exc:
            await _json(
                send,
                401,
                {"error": {"code": exc.code, "message": exc.message, "details": {}}},
                extra=[(b"www-authenticate", b'Bearer realm="vibe-ensemble"')],
            )
            return
        except RateLimited as exc:
            await _json(
                send,
                429,
                {"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                extra=[(b"retry-after", str(max(1, round(exc.retry_after))).encode())],
            )
            return
        scope[CALLER_KEY] = caller
        scope[SERVICES_KEY] = self.services
        try:
            self.services.tokens.throttle(caller)
        except RateLimited as exc:
            # Tool calls answer with a clear tool error (see `_caller_of`), the HTTP answer with Retry-After.
            scope[RETRY_AFTER_KEY] = exc.retry_after
            send = _with_header(send, b"retry-after", str(max(1, round(exc.retry_after))).encode())
        app = self.apps.get(caller.tool_profile or self.default_profile, self.apps[self.default_profile])
        await app(scope, receive, send)


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def _send(message: ASGIMessage) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return _send


async def _json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def transport_security(settings: Settings) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: localhost by default, the configured hosts and origins otherwise."""
    if settings.allowed_hosts:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
        )
    return None
