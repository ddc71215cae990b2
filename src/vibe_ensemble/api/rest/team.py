"""REST routes for the team: register, heartbeat, list, retire. Thin calls into the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, P, ProjectPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    AgentBody,
    AgentName,
    HeartbeatBody,
    RetireBody,
)
from vibe_ensemble.domain.enums import AgentRole, AgentStatus
from vibe_ensemble.domain.models import (
    Agent,
    HeartbeatResult,
)

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get(P + "/agents", tags=["agents"])
async def list_agents(
    project: ProjectPath,
    caller: CallerDep,
    services: ServicesDep,
    role: AgentRole | None = None,
    agent_status: Annotated[AgentStatus | None, Query(alias="status")] = None,
    include_retired: bool = False,
) -> list[Agent]:
    return await services.agents.list(
        caller, project=project, role=role, status=agent_status, include_retired=include_retired
    )


@router.post(P + "/agents", status_code=status.HTTP_201_CREATED, tags=["agents"])
async def register_agent(
    project: ProjectPath, body: AgentBody, caller: CallerDep, services: ServicesDep
) -> Agent:
    return await services.agents.register(caller, project=project, **body.model_dump())


@router.post(P + "/agents/{name}/heartbeat", tags=["agents"])
async def heartbeat(
    project: ProjectPath, name: AgentName, body: HeartbeatBody, caller: CallerDep, services: ServicesDep
) -> HeartbeatResult:
    return await services.agents.heartbeat(
        caller,
        project=project,
        agent=name,
        status=None if body.status is None else AgentStatus(body.status),
        activity=body.activity,
    )


@router.post(P + "/agents/{name}/retire", tags=["agents"])
async def retire_agent(
    project: ProjectPath, name: AgentName, body: RetireBody, caller: CallerDep, services: ServicesDep
) -> Agent:
    return await services.agents.retire(caller, project=project, name=name, reason=body.reason)
