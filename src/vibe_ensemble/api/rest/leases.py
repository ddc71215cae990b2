"""REST routes for leases on paths and named resources. Thin calls into the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, P, ProjectPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    CheckIn,
    ReleaseBody,
    ReserveIn,
)
from vibe_ensemble.domain.models import (
    PathCheck,
    ReleaseResult,
    Reservation,
    ReservationResult,
)
from vibe_ensemble.domain.rules import MAX_NAME

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get(P + "/reservations", tags=["reservations"])
async def list_reservations(
    project: ProjectPath,
    caller: CallerDep,
    services: ServicesDep,
    holder: Annotated[str | None, Query(max_length=MAX_NAME, description="Only this agent's leases.")] = None,
) -> list[Reservation]:
    """Live leases of the project, oldest first (expired ones are never listed)."""
    return await services.reservations.list(caller, project=project, holder=holder)


@router.post(P + "/reservations", tags=["reservations"])
async def reserve_paths(
    project: ProjectPath, body: ReserveIn, caller: CallerDep, services: ServicesDep
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
        issue=body.issue,
        mode=body.mode,
        idempotency_key=body.idempotency_key,
    )


@router.post(P + "/reservations/release", tags=["reservations"])
async def release_paths(
    project: ProjectPath, body: ReleaseBody, caller: CallerDep, services: ServicesDep
) -> ReleaseResult:
    """Release the acting agent's leases on these patterns, or all of them."""
    return await services.reservations.release(caller, body.paths, project=project, agent=body.agent)


@router.post(P + "/reservations/check", tags=["reservations"])
async def check_paths(
    project: ProjectPath, body: CheckIn, caller: CallerDep, services: ServicesDep
) -> PathCheck:
    """Read-only: the leases of others that conflict with these paths, and the free ones."""
    return await services.reservations.check(
        caller,
        body.paths,
        project=project,
        agent=body.agent,
        exclusive=body.exclusive,
        report=body.report,
        files=body.files,
    )
