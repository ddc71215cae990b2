"""REST routes for what the team learned. Thin calls into the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BeforeValidator

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, P, ProjectPath, ServicesDep, digits
from vibe_ensemble.api.rest.schemas import (
    KnowledgeIn,
    KnowledgePatchBody,
    Label,
)
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.models import (
    KnowledgeDetail,
    KnowledgeEntry,
    KnowledgeHit,
)
from vibe_ensemble.domain.rules import MAX_ID, MAX_LABELS, MAX_LIST_LIMIT
from vibe_ensemble.services.knowledge import MAX_QUERY, MAX_SEARCH_LIMIT

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)
Tags = Annotated[
    list[Label] | None,
    Query(max_length=MAX_LABELS, description="Only entries with all these tags (any letter case)."),
]
EntryId = Annotated[
    int, Path(ge=1, le=MAX_ID, description="The knowledge entry's id."), BeforeValidator(digits)
]


@router.get(P + "/knowledge", tags=["knowledge"])
async def list_knowledge(
    project: ProjectPath,
    caller: CallerDep,
    services: ServicesDep,
    kind: KnowledgeKind | None = None,
    tags: Tags = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
) -> list[KnowledgeEntry]:
    """Entries most recently written first."""
    return await services.knowledge.list(caller, project=project, kind=kind, tags=tags, limit=limit)


@router.post(P + "/knowledge", status_code=status.HTTP_201_CREATED, tags=["knowledge"])
async def add_knowledge(
    project: ProjectPath, body: KnowledgeIn, caller: CallerDep, services: ServicesDep
) -> KnowledgeEntry:
    return await services.knowledge.add(caller, project=project, **body.model_dump())


@router.get(P + "/knowledge/search", tags=["knowledge"])
async def search_knowledge(
    project: ProjectPath,
    caller: CallerDep,
    services: ServicesDep,
    query: Annotated[str, Query(max_length=MAX_QUERY, description="Words to look for; any text is fine.")],
    kind: KnowledgeKind | None = None,
    tags: Tags = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 10,
) -> list[KnowledgeHit]:
    """Ranked full-text search; snippets mark matched words with « and »."""
    return await services.knowledge.search(caller, query, project=project, kind=kind, tags=tags, limit=limit)


@router.get(P + "/knowledge/{entry_id}", tags=["knowledge"])
async def get_knowledge(
    project: ProjectPath, entry_id: EntryId, caller: CallerDep, services: ServicesDep
) -> KnowledgeDetail:
    """An entry with its earlier versions, newest first."""
    return await services.knowledge.get(caller, entry_id, project=project)


@router.patch(P + "/knowledge/{entry_id}", tags=["knowledge"])
async def update_knowledge(
    project: ProjectPath,
    entry_id: EntryId,
    body: KnowledgePatchBody,
    caller: CallerDep,
    services: ServicesDep,
) -> KnowledgeEntry:
    """Write a new version; the previous one stays readable."""
    fields = body.model_dump(exclude={"agent", "expected_version"})
    return await services.knowledge.update(
        caller,
        entry_id,
        project=project,
        agent=body.agent,
        expected_version=body.expected_version,
        **fields,
    )
