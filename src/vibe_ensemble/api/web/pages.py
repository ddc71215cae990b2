"""What every dashboard page shares: the frame around its content, and the page/fragment pair that
keeps a page live (the page renders its fragment inside a live region; the script re-fetches it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import Response

from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.api.web.login import Visit
from vibe_ensemble.api.web.render import live, templates

Context = Callable[[Visit, str], Awaitable[dict[str, Any]]]


async def frame(visit: Visit, project: str | None) -> dict[str, Any]:
    """What every page shows around its content: the project selector, who is logged in."""
    services, caller = visit.services, visit.caller
    current = await services.projects.get(caller, project)
    return {
        "project": current,
        "projects": await services.projects.list(caller),
        "caller": caller,
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
    }


async def live_page(
    visit: Visit,
    project: str | None,
    template: str,
    fragment: str,
    families: tuple[str, ...],
    context: Context,
    query: dict[str, Any] | None = None,
) -> Response:
    """A page whose content (`context`) is kept live: `fragment` is its URL, re-fetched with `query`
    on every event of `families`."""
    after = await visit.services.events.latest_id()  # before reading: whatever follows is delivered
    around = await frame(visit, project)
    slug = around["project"].slug
    values = {**around, **await context(visit, slug), "live": live(fragment, slug, after, families, query)}
    return templates().TemplateResponse(visit.request, template, values)


async def live_fragment(visit: Visit, project: str | None, template: str, context: Context) -> Response:
    """The live region of a page alone, for the script to swap in."""
    current = await visit.services.projects.get(visit.caller, project)
    values = {
        "project": current,
        "caller": visit.caller,
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
        **await context(visit, current.slug),
    }
    return templates().TemplateResponse(visit.request, template, values)
