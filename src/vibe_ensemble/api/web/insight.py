"""Pages that draw the project: the dependency graph (server-rendered SVG, critical path marked)
and trends (small SVG charts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from vibe_ensemble.api.web.login import Visit, serve
from vibe_ensemble.api.web.pages import live_fragment, live_page
from vibe_ensemble.domain.graph import NODE_H, NODE_W

router = APIRouter(include_in_schema=False)

ProjectQuery = Annotated[str | None, Query(max_length=64)]
TREND_DAYS = 14
TREND_FAMILIES = ("issue.created", "issue.closed", "issue.updated", "message.sent")


async def _graph(visit: Visit, project: str) -> dict[str, Any]:
    graph = await visit.services.insight.graph(visit.caller, project=project)
    titles = {n.issue.id: n.issue.title for n in graph.nodes}
    return {"graph": graph, "titles": titles, "node_w": NODE_W, "node_h": NODE_H}


@router.get("/graph")
async def graph_page(request: Request, project: ProjectQuery = None) -> Response:
    """The unfinished issues as a dependency graph, the critical path and what unblocks the most."""
    return await serve(
        request,
        "page",
        lambda visit: live_page(visit, project, "graph.html", "/fragments/graph", ("issue.*",), _graph),
    )


@router.get("/fragments/graph")
async def graph_fragment(request: Request, project: ProjectQuery = None) -> Response:
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_graph.html", _graph)
    )


async def _trends(visit: Visit, project: str) -> dict[str, Any]:
    return {"trends": await visit.services.insight.trends(visit.caller, project=project, days=TREND_DAYS)}


@router.get("/trends")
async def trends_page(request: Request, project: ProjectQuery = None) -> Response:
    """Issues opened and finished, and messages sent, per day over the last two weeks."""
    return await serve(
        request,
        "page",
        lambda visit: live_page(visit, project, "trends.html", "/fragments/trends", TREND_FAMILIES, _trends),
    )


@router.get("/fragments/trends")
async def trends_fragment(request: Request, project: ProjectQuery = None) -> Response:
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_trends.html", _trends)
    )
