"""MCP tools, prompts and resources for the shared workspace: leases, knowledge, briefings.

`register_workspace` adds them to a server built by `api.mcp.build_mcp`; the lease
and knowledge tools belong to the core profile, so every agent has them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import structlog
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import Field, TypeAdapter

from vibe_ensemble.api.briefing_prompts import coordinator_prompt, worker_prompt
from vibe_ensemble.api.mcp import AgentArg, ProjectArg, _audit_denial, _tool_errors
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind, ReserveMode
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied, VibeError
from vibe_ensemble.domain.models import (
    KnowledgeDetail,
    KnowledgeEntry,
    KnowledgeHit,
    PathCheck,
    ReleaseResult,
    ReservationResult,
)
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.services import Services
from vibe_ensemble.services.reservations import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S

P = ParamSpec("P")
R = TypeVar("R")

CallerFn = Callable[[Context], Caller]
log = structlog.get_logger(__name__)

Paths = Annotated[
    list[str],
    Field(
        description="Repository-relative paths or git globs (src/api/**, **/*.py, docs/*.md), "
        "or named resources (service://staging-db)."
    ),
]
Tags = Annotated[list[str] | None, Field(description="Short topic words, e.g. ['db', 'testing'].")]
IssueLinks = Annotated[list[int] | None, Field(description="Ids of issues this is about.")]


def _protocol_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn service errors of prompts and resources into JSON-RPC errors an agent can act on."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except VibeError as exc:
            if isinstance(exc, PermissionDenied):
                await _audit_denial((*args, *kwargs.values()), exc)
            data = {"code": exc.code, **json.loads(json.dumps(exc.details, default=str))}
            raise MCPError(INVALID_PARAMS, f"[{exc.code}] {exc.message}", data) from exc
        except MCPError:
            raise
        except Exception as exc:
            log.exception("mcp_read_failed", handler=fn.__name__)
            raise MCPError(INTERNAL_ERROR, "[internal] internal server error") from exc

    return wrapper


def _json(value: Any) -> str:
    return TypeAdapter(type(value)).dump_json(value, indent=2).decode()


def _positive(field: str, value: str, maximum: int = MAX_ID) -> int:
    """A URI parameter that must be a whole number from 1 to `maximum`."""
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise InvalidInput(field, f"must be a whole number from 1 to {maximum}")
    return int(value)


def register_workspace(mcp: MCPServer, services: Services, caller_fn: CallerFn) -> None:
    """Add the lease and knowledge tools, the briefing prompts and the vibe:// resources."""
    _register_lease_tools(mcp, services, caller_fn)
    _register_knowledge_tools(mcp, services, caller_fn)
    _register_prompts(mcp, services, caller_fn)
    _register_resources(mcp, services, caller_fn)


def _register_lease_tools(mcp: MCPServer, services: Services, _caller: CallerFn) -> None:
    @mcp.tool()
    @_tool_errors
    async def reserve_paths(
        ctx: Context,
        paths: Paths,
        exclusive: Annotated[
            bool, Field(description="true: nobody else may lease them; false: shared with other readers.")
        ] = True,
        ttl_s: Annotated[
            int, Field(ge=MIN_TTL_S, le=MAX_TTL_S, description="Seconds until the lease ends by itself.")
        ] = DEFAULT_TTL_S,
        reason: Annotated[str, Field(description="Why, e.g. the issue: '#12 refactor auth'.")] = "",
        mode: Annotated[
            ReserveMode, Field(description="advisory: grant what is free; strict: nothing if any conflict.")
        ] = ReserveMode.ADVISORY,
        idempotency_key: Annotated[
            str | None, Field(description="Retrying with the same key returns the first result.")
        ] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> ReservationResult:
        """Before editing files, lease them so teammates do not edit them at the same time.

        Returns what was granted and, for each conflict, who holds it, their pattern and expiry:
        do not edit conflicting paths. Reserving a pattern you hold again renews it.
        """
        return await services.reservations.reserve(
            _caller(ctx),
            paths,
            project=project,
            agent=agent,
            exclusive=exclusive,
            ttl_s=ttl_s,
            reason=reason,
            mode=mode,
            idempotency_key=idempotency_key,
        )

    @mcp.tool()
    @_tool_errors
    async def release_paths(
        ctx: Context,
        paths: Annotated[
            list[str] | None, Field(description="Patterns exactly as reserved; omit to release all yours.")
        ] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> ReleaseResult:
        """When you are done with files (issue closed or abandoned), release your leases on them."""
        return await services.reservations.release(_caller(ctx), paths, project=project, agent=agent)

    @mcp.tool()
    @_tool_errors
    async def check_paths(
        ctx: Context,
        paths: Paths,
        exclusive: Annotated[
            bool, Field(description="false: report only exclusive holders (enough to read or share).")
        ] = True,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> PathCheck:
        """Ask who holds paths without leasing anything: lists conflicting holders and the free paths."""
        return await services.reservations.check(
            _caller(ctx), paths, project=project, agent=agent, exclusive=exclusive
        )


def _register_knowledge_tools(mcp: MCPServer, services: Services, _caller: CallerFn) -> None:
    @mcp.tool()
    @_tool_errors
    async def add_knowledge(
        ctx: Context,
        kind: Annotated[
            KnowledgeKind,
            Field(description="pattern, practice, guideline (a rule), decision (and why) or note."),
        ],
        title: Annotated[str, Field(description="What it is about, in a line.")],
        body: Annotated[str, Field(description="Markdown: the lesson, with enough context to act on.")],
        tags: Tags = None,
        issue_ids: IssueLinks = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> KnowledgeEntry:
        """Record what you learned that the next agent should know: a pitfall, a convention, a decision."""
        return await services.knowledge.add(
            _caller(ctx),
            project=project,
            agent=agent,
            kind=kind,
            title=title,
            body=body,
            tags=tags,
            issue_ids=issue_ids,
        )

    @mcp.tool()
    @_tool_errors
    async def update_knowledge(
        ctx: Context,
        id: Annotated[int, Field(ge=1, le=MAX_ID, description="The entry's id.")],
        kind: Annotated[KnowledgeKind | None, Field(description="New kind.")] = None,
        title: Annotated[str | None, Field(description="New title.")] = None,
        body: Annotated[str | None, Field(description="New body (replaces it).")] = None,
        tags: Annotated[list[str] | None, Field(description="Replaces the tags.")] = None,
        issue_ids: Annotated[list[int] | None, Field(description="Replaces the linked issues.")] = None,
        expected_version: Annotated[
            int | None, Field(description="Fail unless the entry is still at this version.")
        ] = None,
        agent: AgentArg = None,
        project: ProjectArg = None,
    ) -> KnowledgeEntry:
        """Correct or extend an entry that is out of date; the previous version stays readable."""
        return await services.knowledge.update(
            _caller(ctx),
            id,
            project=project,
            agent=agent,
            kind=kind,
            title=title,
            body=body,
            tags=tags,
            issue_ids=issue_ids,
            expected_version=expected_version,
        )

    @mcp.tool()
    @_tool_errors
    async def search_knowledge(
        ctx: Context,
        query: Annotated[str, Field(description="Words to look for; any text is fine.")],
        kind: Annotated[KnowledgeKind | None, Field(description="Only entries of this kind.")] = None,
        tags: Annotated[list[str] | None, Field(description="Only entries with all these tags.")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="At most this many results.")] = 10,
        project: ProjectArg = None,
    ) -> list[KnowledgeHit]:
        """Before solving a problem or making a convention, search what the team already knows.

        Best matches first; the snippet marks matched words «like this».
        """
        return await services.knowledge.search(
            _caller(ctx), query, project=project, kind=kind, tags=tags, limit=limit
        )

    @mcp.tool()
    @_tool_errors
    async def get_knowledge(
        ctx: Context,
        id: Annotated[int, Field(ge=1, le=MAX_ID, description="The entry's id (from search_knowledge).")],
        project: ProjectArg = None,
    ) -> KnowledgeDetail:
        """Read a whole knowledge entry and its earlier versions."""
        return await services.knowledge.get(_caller(ctx), id, project=project)


def _register_prompts(mcp: MCPServer, services: Services, _caller: CallerFn) -> None:
    async def render(
        ctx: Context, role: Literal["coordinator", "worker"], agent: str | None, project: str | None
    ) -> str:
        briefing = await services.briefings.assemble(_caller(ctx), project=project, agent=agent or None)
        now = services.ctx.clock()
        return coordinator_prompt(briefing, now) if role == "coordinator" else worker_prompt(briefing, now)

    @mcp.prompt(title="Coordinator briefing")
    @_protocol_errors
    async def coordinator_briefing(ctx: Context, agent: str | None = None, project: str | None = None) -> str:
        """How to plan and delegate, with the project's live state: team, ready and blocked work, leases,
        your mail and the most relevant guidelines. `agent`: your name, for a team token."""
        return await render(ctx, "coordinator", agent, project)

    @mcp.prompt(title="Worker briefing")
    @_protocol_errors
    async def worker_briefing(ctx: Context, agent: str | None = None, project: str | None = None) -> str:
        """How to claim, lease, work and report, with the project's live state: your issues, your
        leases, your mail and the most relevant guidelines. `agent`: your name, for a team token."""
        return await render(ctx, "worker", agent, project)


def _register_resources(mcp: MCPServer, services: Services, _caller: CallerFn) -> None:
    json_type = "application/json"

    @mcp.resource(
        "vibe://projects{?limit}",
        name="projects",
        title="Projects",
        description="The projects this token can see (read vibe://projects).",
        mime_type=json_type,
    )
    @_protocol_errors
    async def projects(ctx: Context, limit: str = "500") -> str:
        return _json((await services.projects.list(_caller(ctx)))[: _positive("limit", limit, 500)])

    @mcp.resource(
        "vibe://projects/{project}",
        name="project",
        title="Project",
        description="One project: its record and the state of its board in brief.",
        mime_type=json_type,
    )
    @_protocol_errors
    async def project_overview(ctx: Context, project: str) -> str:
        caller = _caller(ctx)
        record = await services.projects.get(caller, project)
        board = await services.briefings.board(caller, project=project)
        summary = {
            "project": TypeAdapter(type(record)).dump_python(record, mode="json"),
            "issues": {status: len(cards) for status, cards in board.columns.items()},
            "active_agents": [a.name for a in board.agents],
            "leases": len(board.leases),
        }
        return json.dumps(summary, indent=2)

    @mcp.resource(
        "vibe://projects/{project}/board",
        name="board",
        title="Board",
        description="Issues by status (ready ones flagged), the active team and the live leases.",
        mime_type=json_type,
    )
    @_protocol_errors
    async def board(ctx: Context, project: str) -> str:
        return _json(await services.briefings.board(_caller(ctx), project=project))

    @mcp.resource(
        "vibe://projects/{project}/issues/{id}",
        name="issue",
        title="Issue",
        description="An issue with its comments, dependencies and dependants.",
        mime_type=json_type,
    )
    @_protocol_errors
    async def issue(ctx: Context, project: str, id: str) -> str:
        return _json(await services.issues.get(_caller(ctx), _positive("id", id), project=project))

    @mcp.resource(
        "vibe://projects/{project}/knowledge/{id}",
        name="knowledge",
        title="Knowledge entry",
        description="A knowledge entry with its earlier versions.",
        mime_type=json_type,
    )
    @_protocol_errors
    async def knowledge(ctx: Context, project: str, id: str) -> str:
        return _json(await services.knowledge.get(_caller(ctx), _positive("id", id), project=project))
