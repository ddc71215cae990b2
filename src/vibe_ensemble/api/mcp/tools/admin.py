"""MCP tools of the `full` profile: projects and retiring agents."""

from __future__ import annotations

from typing import Annotated

from vibe_ensemble.api.mcp.context import acting
from vibe_ensemble.api.mcp.params import ProjectArg, text
from vibe_ensemble.domain.models import Agent, Project
from vibe_ensemble.domain.rules import MAX_BODY, MAX_LINE, MAX_NAME, MAX_NOTE


async def create_project(
    slug: Annotated[str, text("Lowercase id, e.g. 'web-app'.", MAX_NAME)],
    name: Annotated[
        str | None,
        text("Display name; default: the slug.", MAX_LINE),
    ] = None,
    description: Annotated[str, text("What the project is.", MAX_BODY)] = "",
    repo: Annotated[str, text("Repository path or URL.", MAX_NOTE)] = "",
) -> Project:
    """Start coordinating a new code base: create its project (admin)."""
    services, caller = acting()
    return await services.projects.create(caller, slug=slug, name=name, description=description, repo=repo)


async def list_projects() -> list[Project]:
    """List the projects this token can see, to pick the `project` argument of other tools."""
    services, caller = acting()
    return await services.projects.list(caller)


async def retire_agent(
    name: Annotated[str, text("The agent to retire.", MAX_NAME)],
    reason: Annotated[str, text("Why, for the record.", MAX_NOTE)] = "",
    project: ProjectArg = None,
) -> Agent:
    """Retire an agent: offline, leases released, its unfinished issues unassigned (coordinators)."""
    services, caller = acting()
    return await services.agents.retire(caller, name=name, project=project, reason=reason)


TOOLS = (
    create_project,
    list_projects,
    retire_agent,
)
