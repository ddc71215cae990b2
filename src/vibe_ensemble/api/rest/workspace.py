"""REST routes for the shared workspace: leases, knowledge and the board. Each a thin service call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import Field

from vibe_ensemble.api.rest.deps import CallerDep, ServicesDep
from vibe_ensemble.api.rest.schemas import Body
from vibe_ensemble.domain.enums import KnowledgeKind, ReserveMode
from vibe_ensemble.domain.models import (
    KnowledgeDetail,
    KnowledgeEntry,
    KnowledgeHit,
    PathCheck,
    ReleaseResult,
    Reservation,
    ReservationResult,
)
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.services.briefings import Board
from vibe_ensemble.services.reservations import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S

router = APIRouter(prefix="/api/v1")
P = "/projects/{project}"
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The knowledge entry's id.")]

PATHS_DOC = (
    "Repository-relative paths or git globs (src/api/**, **/*.py), or named resources (service://staging-db)."
)


class ReserveIn(Body):
    paths: list[str] = Field(description=PATHS_DOC, min_length=1, max_length=100)
    exclusive: bool = True
    ttl_s: int = Field(
        DEFAULT_TTL_S, ge=MIN_TTL_S, le=MAX_TTL_S, description="Seconds until the lease ends by itself."
    )
    reason: str = Field("", max_length=1000)
    mode: ReserveMode = Field(
        ReserveMode.ADVISORY, description="advisory: grant what is free; strict: nothing on any conflict."
    )
    idempotency_key: str | None = Field(None, max_length=200)
    agent: str | None = None


class ReleaseIn(Body):
    paths: list[str] | None = Field(
        None, max_length=1000, description="Patterns exactly as reserved; omit to release all."
    )
    agent: str | None = None


class CheckIn(Body):
    paths: list[str] = Field(description=PATHS_DOC, min_length=1, max_length=1000)
    exclusive: bool = Field(True, description="false: report only exclusive holders.")
    agent: str | None = Field(None, description="Ignore this agent's own leases.")


class KnowledgeIn(Body):
    kind: KnowledgeKind
    title: str = Field(max_length=200)
    body: str = Field(max_length=65_536)
    tags: list[str] = Field(default_factory=list, max_length=32)
    issue_ids: list[Id] = Field(default_factory=list, max_length=50)
    agent: str | None = None


class KnowledgePatch(Body):
    kind: KnowledgeKind | None = None
    title: str | None = Field(None, max_length=200)
    body: str | None = Field(None, max_length=65_536)
    tags: list[str] | None = Field(None, max_length=32)
    issue_ids: list[Id] | None = Field(None, max_length=50)
    expected_version: Id | None = None
    agent: str | None = None


# --- leases ---------------------------------------------------------------------


@router.get(P + "/reservations", tags=["reservations"])
async def list_reservations(
    project: str,
    caller: CallerDep,
    services: ServicesDep,
    holder: Annotated[str | None, Query(max_length=64, description="Only this agent's leases.")] = None,
) -> list[Reservation]:
    """Live leases of the project, oldest first (expired ones are never listed)."""
    return await services.reservations.list(caller, project=project, holder=holder)


@router.post(P + "/reservations", tags=["reservations"])
async def reserve_paths(
    project: str, body: ReserveIn, caller: CallerDep, services: ServicesDep
) -> ReservationResult:
    """Lease paths: grants what is free and lists conflicts (strict mode: nothing on any conflict)."""
    return await services.reservations.reserve(
        caller,
        body.paths,
        project=project,
        agent=body.agent,
        exclusive=body.exclusive,
        ttl_s=body.ttl_s,
        reason=body.reason,
        mode=body.mode,
        idempotency_key=body.idempotency_key,
    )


@router.post(P + "/reservations/release", tags=["reservations"])
async def release_paths(
    project: str, body: ReleaseIn, caller: CallerDep, services: ServicesDep
) -> ReleaseResult:
    """Release the acting agent's leases on these patterns, or all of them."""
    return await services.reservations.release(caller, body.paths, project=project, agent=body.agent)


@router.post(P + "/reservations/check", tags=["reservations"])
async def check_paths(project: str, body: CheckIn, caller: CallerDep, services: ServicesDep) -> PathCheck:
    """Read-only: the leases of others that conflict with these paths, and the free ones."""
    return await services.reservations.check(
        caller, body.paths, project=project, agent=body.agent, exclusive=body.exclusive
    )


# --- knowledge ------------------------------------------------------------------


@router.get(P + "/knowledge", tags=["knowledge"])
async def list_knowledge(
    project: str,
    caller: CallerDep,
    services: ServicesDep,
    kind: KnowledgeKind | None = None,
    tag: Annotated[list[str] | None, Query(max_length=32, description="Only entries with all these.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[KnowledgeEntry]:
    """Entries most recently written first."""
    return await services.knowledge.list(caller, project=project, kind=kind, tags=tag, limit=limit)


@router.post(P + "/knowledge", status_code=status.HTTP_201_CREATED, tags=["knowledge"])
async def add_knowledge(
    project: str, body: KnowledgeIn, caller: CallerDep, services: ServicesDep
) -> KnowledgeEntry:
    return await services.knowledge.add(caller, project=project, **body.model_dump())


@router.get(P + "/knowledge/search", tags=["knowledge"])
async def search_knowledge(
    project: str,
    caller: CallerDep,
    services: ServicesDep,
    q: Annotated[str, Query(max_length=1000, description="Words to look for; any text is fine.")],
    kind: KnowledgeKind | None = None,
    tag: Annotated[list[str] | None, Query(max_length=32, description="Only entries with all these.")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[KnowledgeHit]:
    """Ranked full-text search; snippets mark matched words with « and »."""
    return await services.knowledge.search(caller, q, project=project, kind=kind, tags=tag, limit=limit)


@router.get(P + "/knowledge/{entry_id}", tags=["knowledge"])
async def get_knowledge(
    project: str, entry_id: EntryId, caller: CallerDep, services: ServicesDep
) -> KnowledgeDetail:
    """An entry with its earlier versions, newest first."""
    return await services.knowledge.get(caller, entry_id, project=project)


@router.patch(P + "/knowledge/{entry_id}", tags=["knowledge"])
async def update_knowledge(
    project: str, entry_id: EntryId, body: KnowledgePatch, caller: CallerDep, services: ServicesDep
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


# --- board ----------------------------------------------------------------------


@router.get(P + "/board", tags=["projects"])
async def board(project: str, caller: CallerDep, services: ServicesDep) -> Board:
    """Issues by status (ready ones flagged), the active team and the live leases."""
    return await services.briefings.board(caller, project=project)
