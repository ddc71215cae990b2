"""The leases page: every live lease (who holds which pattern, exclusive or shared, why, until when),
filterable by holder, and ending a stale one (`agent.retire`, audited)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from vibe_ensemble.api.web.login import Visit, form_text, serve
from vibe_ensemble.api.web.pages import Context, live_fragment, live_page
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.domain.rules import MAX_ID

router = APIRouter(include_in_schema=False)

FRAGMENT = "/fragments/leases"
FAMILIES = ("reservation.*", "agent.*")
COUNTDOWN_S = 30  # the page looks again at least this often, so the countdowns stay current

ProjectQuery = Annotated[str | None, Query(max_length=64)]
AgentQuery = Annotated[str | None, Query(max_length=64)]


def _leases(agent: str | None) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        window = timedelta(seconds=visit.request.app.state.runtime.settings.attention_conflict_window_s)
        view = await visit.services.oversight.leases(
            visit.caller, project=project, agent=agent or None, window=window
        )
        recheck = COUNTDOWN_S
        if view.leases:
            first = (view.leases[0].expires_at - view.now).total_seconds()
            recheck = max(1, min(COUNTDOWN_S, math.ceil(first)))
        return {
            "view": view,
            "recheck_s": recheck,
            "may_revoke": visit.may(Op.AGENT_RETIRE),
            "notice": "Lease ended." if visit.request.query_params.get("done") == "revoked" else "",
        }

    return context


@router.get("/leases")
async def leases_page(request: Request, project: ProjectQuery = None, agent: AgentQuery = None) -> Response:
    """Every live lease of the project, soonest expiry first; `?agent=` shows one holder's."""
    query = {"agent": agent} if agent else None
    return await serve(
        request,
        "page",
        lambda visit: live_page(visit, project, "leases.html", FRAGMENT, FAMILIES, _leases(agent), query),
    )


@router.get(FRAGMENT)
async def leases_fragment(
    request: Request, project: ProjectQuery = None, agent: AgentQuery = None
) -> Response:
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_leases.html", _leases(agent))
    )


@router.post("/leases/{lease_id}/release")
async def revoke_lease(request: Request, lease_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    """End another agent's live lease (audited as `reservation.revoked`)."""

    async def build(visit: Visit) -> Response:
        form = await request.form()
        project = form_text(form, "project") or None
        await visit.services.oversight.revoke_lease(
            visit.caller, lease_id, project=project, reason="ended from the dashboard"
        )
        back = {"project": project or "", "done": "revoked"}
        if form_text(form, "agent"):
            back["agent"] = form_text(form, "agent")
        return RedirectResponse(f"/leases?{urlencode(back)}", 303)

    return await serve(request, "action", build)
