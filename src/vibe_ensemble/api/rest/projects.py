"""REST routes for projects and their board. Thin calls into the services."""

from __future__ import annotations

from fastapi import APIRouter, status

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, P, ProjectPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    ProjectIn,
)
from vibe_ensemble.domain.models import (
    Project,
)
from vibe_ensemble.services.briefings import Board

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get("/projects", tags=["projects"])
async def list_projects(caller: CallerDep, services: ServicesDep) -> list[Project]:
    return await services.projects.list(caller)


@router.post("/projects", status_code=status.HTTP_201_CREATED, tags=["projects"])
async def create_project(body: ProjectIn, caller: CallerDep, services: ServicesDep) -> Project:
    return await services.projects.create(caller, **body.model_dump())


@router.get(P, tags=["projects"])
async def get_project(project: ProjectPath, caller: CallerDep, services: ServicesDep) -> Project:
    return await services.projects.get(caller, project)


@router.get(P + "/board", tags=["projects"])
async def board(project: ProjectPath, caller: CallerDep, services: ServicesDep) -> Board:
    """Issues by status (ready ones flagged), the active team and the live leases."""
    return await services.briefings.board(caller, project=project)
