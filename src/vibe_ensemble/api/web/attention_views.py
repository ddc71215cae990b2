"""The "Needs attention" panel's live fragment and its one action (release a silent agent's work)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from vibe_ensemble.api.web import attention
from vibe_ensemble.api.web.login import Visit, form_text, serve
from vibe_ensemble.api.web.render import templates

router = APIRouter(include_in_schema=False)


@router.get(attention.FRAGMENT)
async def attention_fragment(
    request: Request, project: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    async def build(visit: Visit) -> Response:
        current = await visit.services.projects.get(visit.caller, project)
        ctx = {"project": current, **await attention.context(visit, current.slug)}
        return templates().TemplateResponse(request, "_attention.html", ctx)

    return await serve(request, "fragment", build)


@router.post("/agents/{name}/release")
async def release_agent(request: Request, name: Annotated[str, Path(max_length=64)]) -> Response:
    """Release a silent agent's leases and put its issues in progress back in the pool (audited)."""

    async def build(visit: Visit) -> Response:
        form = await request.form()
        project = form_text(form, "project") or None
        rules = attention.rules_of(request)
        await visit.services.attention.release(visit.caller, name=name, project=project, rules=rules)
        return RedirectResponse(f"/?{urlencode({'project': project or '', 'done': 'released'})}", 303)

    return await serve(request, "action", build)
