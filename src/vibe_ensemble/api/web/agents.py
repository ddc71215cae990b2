"""An agent's page: its status and activity, its issues, leases, recent mail and events — live."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from vibe_ensemble.api.web.login import Visit, serve
from vibe_ensemble.api.web.pages import Context, live_fragment, live_page

router = APIRouter(include_in_schema=False)

FAMILIES = ("agent.*", "issue.*", "reservation.*", "message.*")

Name = Annotated[str, Path(min_length=1, max_length=64)]
ProjectQuery = Annotated[str | None, Query(max_length=64)]


def _agent(name: str) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        view = await visit.services.oversight.agent(visit.caller, name, project=project)
        return {"view": view}

    return context


@router.get("/agents/{name}")
async def agent_page(request: Request, name: Name, project: ProjectQuery = None) -> Response:
    """One agent: status, activity, issues, leases, mail and events."""
    return await serve(
        request,
        "page",
        lambda visit: live_page(
            visit, project, "agent.html", f"/fragments/agents/{name}", FAMILIES, _agent(name)
        ),
    )


@router.get("/fragments/agents/{name}")
async def agent_fragment(request: Request, name: Name, project: ProjectQuery = None) -> Response:
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_agent.html", _agent(name))
    )
