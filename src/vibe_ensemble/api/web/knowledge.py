"""The knowledge browser: entries newest first (by kind), one entry with its earlier versions, and a
search across knowledge and mail of the project (the services' own searches)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from vibe_ensemble.api.web.login import Visit, serve
from vibe_ensemble.api.web.pages import Context, live_fragment, live_page
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.rules import MAX_ID

router = APIRouter(include_in_schema=False)

FAMILIES = ("knowledge.*", "message.sent")
ENTRIES = 50
HITS = 20

ProjectQuery = Annotated[str | None, Query(max_length=64)]
Search = Annotated[str, Query(max_length=500)]
KindQuery = Annotated[str, Query(max_length=16)]


def _kind(value: str) -> KnowledgeKind | None:
    if not value:
        return None
    try:
        return KnowledgeKind(value)
    except ValueError:
        choices = ", ".join(k.value for k in KnowledgeKind)
        raise InvalidInput("kind", f"must be one of {choices}") from None


def _browse(q: str, kind: str) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        services, caller = visit.services, visit.caller
        chosen = _kind(kind)
        found: dict[str, Any] = {"q": q, "kind": kind, "kinds": list(KnowledgeKind), "bodies": None}
        if q.strip():
            found["hits"] = await services.knowledge.search(
                caller, q, project=project, kind=chosen, limit=HITS
            )
            found["mail"] = await services.threads.search(caller, q, project=project, limit=HITS)
            found["bodies"] = services.threads.bodies(caller)
        else:
            found["entries"] = await services.knowledge.list(
                caller, project=project, kind=chosen, limit=ENTRIES
            )
        return found

    return context


@router.get("/knowledge")
async def knowledge_page(
    request: Request, project: ProjectQuery = None, q: Search = "", kind: KindQuery = ""
) -> Response:
    """Knowledge entries newest first; with `q`, the entries and the mail that match it."""
    query = {k: v for k, v in (("q", q), ("kind", kind)) if v}
    context = _browse(q, kind)
    return await serve(
        request,
        "page",
        lambda visit: live_page(
            visit, project, "knowledge.html", "/fragments/knowledge", FAMILIES, context, query
        ),
    )


@router.get("/fragments/knowledge")
async def knowledge_fragment(
    request: Request, project: ProjectQuery = None, q: Search = "", kind: KindQuery = ""
) -> Response:
    context = _browse(q, kind)
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_knowledge.html", context)
    )


EntryId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _entry(entry_id: int) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        return {"detail": await visit.services.knowledge.get(visit.caller, entry_id, project=project)}

    return context


@router.get("/knowledge/{entry_id}")
async def entry_page(request: Request, entry_id: EntryId, project: ProjectQuery = None) -> Response:
    """One knowledge entry and its earlier versions."""
    return await serve(
        request,
        "page",
        lambda visit: live_page(
            visit,
            project,
            "entry.html",
            f"/fragments/knowledge/{entry_id}",
            ("knowledge.*",),
            _entry(entry_id),
        ),
    )


@router.get("/fragments/knowledge/{entry_id}")
async def entry_fragment(request: Request, entry_id: EntryId, project: ProjectQuery = None) -> Response:
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_entry.html", _entry(entry_id))
    )
