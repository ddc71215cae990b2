"""MCP tools for the team: register, heartbeat, who is in the project."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vibe_ensemble.api.mcp.context import acting
from vibe_ensemble.api.mcp.params import AgentArg, Label, ProjectArg, items, text
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, ReportedStatus
from vibe_ensemble.domain.models import Agent, HeartbeatResult
from vibe_ensemble.domain.rules import MAX_BODY, MAX_LABELS, MAX_LINE, MAX_NAME, MAX_NOTE


async def register_agent(
    role: Annotated[
        AgentRole | None,
        Field(description="coordinator plans and delegates; worker does issues (a new agent's default)."),
    ] = None,
    name: Annotated[
        str | None,
        text("Your name; omit for a memorable generated one.", MAX_NAME),
    ] = None,
    capabilities: Annotated[
        list[Label] | None,
        items("What you are good at, e.g. ['python', 'frontend']; omit to keep yours.", MAX_LABELS),
    ] = None,
    program: Annotated[str | None, text("Your client, e.g. 'claude-code'.", MAX_LINE)] = None,
    model: Annotated[str | None, text("Your model, e.g. 'claude-sonnet'.", MAX_LINE)] = None,
    description: Annotated[
        str | None,
        text("What you are here to do (a short description; it may span lines).", MAX_BODY),
    ] = None,
    project: ProjectArg = None,
) -> Agent:
    """Register yourself (or re-attach to your registration: what you omit is kept). Call this first."""
    services, caller = acting()
    return await services.agents.register(
        caller,
        project=project,
        name=name,
        role=role,
        capabilities=capabilities,
        program=program,
        model=model,
        description=description,
    )


async def heartbeat(
    status: Annotated[
        ReportedStatus | None, Field(description="idle, working or blocked (offline is the server's to set).")
    ] = None,
    activity: Annotated[
        str | None,
        text("What you are doing right now, in a line.", MAX_NOTE),
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> HeartbeatResult:
    """Say you are alive; returns unread mail, your assigned issues, ready issues and expiring leases."""
    services, caller = acting()
    return await services.agents.heartbeat(
        caller,
        project=project,
        agent=agent,
        status=None if status is None else AgentStatus(status),
        activity=activity,
    )


async def list_agents(
    role: Annotated[AgentRole | None, Field(description="Only agents of this role.")] = None,
    status: Annotated[AgentStatus | None, Field(description="Only agents in this status.")] = None,
    include_retired: Annotated[bool, Field(description="Also list retired agents.")] = False,
    project: ProjectArg = None,
) -> list[Agent]:
    """See who is in the project (role, status, activity) before you assign or message someone."""
    services, caller = acting()
    return await services.agents.list(
        caller, project=project, role=role, status=status, include_retired=include_retired
    )


TOOLS = (
    register_agent,
    heartbeat,
    list_agents,
)
