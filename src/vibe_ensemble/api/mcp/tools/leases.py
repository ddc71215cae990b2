"""MCP tools for leases on paths and named resources: reserve, release, check."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vibe_ensemble.api.mcp.context import acting
from vibe_ensemble.api.mcp.params import (
    AgentArg,
    CheckPaths,
    Id,
    Pattern,
    ProjectArg,
    ReservePaths,
    items,
    text,
)
from vibe_ensemble.domain.enums import ReserveMode
from vibe_ensemble.domain.models import PathCheck, ReleaseResult, ReservationResult
from vibe_ensemble.domain.rules import MAX_LINE, MAX_NOTE
from vibe_ensemble.services.reservations import (
    DEFAULT_TTL_S,
    FILES_DOC,
    MAX_CHECK_PATHS,
    MAX_TTL_S,
    MIN_TTL_S,
)


async def reserve_paths(
    paths: ReservePaths,
    exclusive: Annotated[
        bool, Field(description="true: nobody else may lease them; false: shared with other readers.")
    ] = True,
    ttl_s: Annotated[
        int, Field(ge=MIN_TTL_S, le=MAX_TTL_S, description="Seconds until the lease ends by itself.")
    ] = DEFAULT_TTL_S,
    reason: Annotated[
        str,
        text("Why, e.g. 'refactor auth'.", MAX_NOTE),
    ] = "",
    issue: Annotated[
        Id | None, Field(description="Id of the issue (of this project) the leases serve.")
    ] = None,
    mode: Annotated[
        ReserveMode, Field(description="advisory: grant what is free; strict: nothing if any conflict.")
    ] = ReserveMode.ADVISORY,
    idempotency_key: Annotated[
        str | None,
        text("A retry with the same key gets the first result, less leases ended since.", MAX_LINE),
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> ReservationResult:
    """Before editing files, lease them so teammates do not edit them at the same time.

    Returns what was granted and, for each conflict, who holds it, their pattern and expiry:
    do not edit conflicting paths. Reserving a pattern you hold again renews it.
    """
    services, caller = acting()
    return await services.reservations.reserve(
        caller,
        paths,
        project=project,
        agent=agent,
        exclusive=exclusive,
        ttl_s=ttl_s,
        reason=reason,
        issue=issue,
        mode=mode,
        idempotency_key=idempotency_key,
    )


async def release_paths(
    paths: Annotated[
        list[Pattern] | None,
        items("Patterns exactly as reserved; omit to release all yours.", MAX_CHECK_PATHS),
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> ReleaseResult:
    """When you are done with files (issue closed or abandoned), release your leases on them."""
    services, caller = acting()
    return await services.reservations.release(caller, paths, project=project, agent=agent)


async def check_paths(
    paths: CheckPaths,
    exclusive: Annotated[
        bool, Field(description="false: report only exclusive holders (enough to read or share).")
    ] = True,
    report: Annotated[
        bool, Field(description="Record the conflicts found as a refusal (e.g. a commit you refuse).")
    ] = False,
    files: Annotated[bool, Field(description=FILES_DOC)] = False,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> PathCheck:
    """Ask who holds paths without leasing anything: lists conflicting holders and the free paths."""
    services, caller = acting()
    return await services.reservations.check(
        caller, paths, project=project, agent=agent, exclusive=exclusive, report=report, files=files
    )


TOOLS = (
    reserve_paths,
    release_paths,
    check_paths,
)
