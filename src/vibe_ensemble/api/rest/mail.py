"""REST routes for mail: send, inbox, mark read, acknowledge, wait. Thin calls into the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.held import while_connected
from vibe_ensemble.api.rest.deps import CallerDep, P, ProjectPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    AgentName,
    IdsIn,
    MessageIn,
)
from vibe_ensemble.domain.models import (
    Inbox,
    Message,
)
from vibe_ensemble.domain.rules import MAX_ID, MAX_LIST_LIMIT
from vibe_ensemble.services.live import MAX_WAIT_S

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.post(P + "/messages", status_code=status.HTTP_201_CREATED, tags=["messages"])
async def send_message(
    project: ProjectPath, body: MessageIn, caller: CallerDep, services: ServicesDep
) -> Message:
    return await services.messages.send(caller, project=project, **body.model_dump())


@router.get(P + "/agents/{name}/inbox", tags=["messages"])
async def fetch_inbox(
    project: ProjectPath,
    name: AgentName,
    caller: CallerDep,
    services: ServicesDep,
    unread_only: bool = False,
    since_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    mark_read: bool = False,
) -> Inbox:
    return await services.messages.fetch_inbox(
        caller,
        project=project,
        agent=name,
        unread_only=unread_only,
        since_id=since_id,
        limit=limit,
        mark_read=mark_read,
    )


@router.post(P + "/agents/{name}/inbox/read", tags=["messages"])
async def mark_read(
    project: ProjectPath, name: AgentName, body: IdsIn, caller: CallerDep, services: ServicesDep
) -> list[int]:
    return await services.messages.mark_read(caller, body.ids, project=project, agent=name)


@router.post(P + "/agents/{name}/inbox/ack", tags=["messages"])
async def acknowledge(
    project: ProjectPath, name: AgentName, body: IdsIn, caller: CallerDep, services: ServicesDep
) -> list[int]:
    return await services.messages.acknowledge(caller, body.ids, project=project, agent=name)


@router.get(P + "/agents/{name}/inbox/wait", tags=["messages"])
async def wait_for_messages(
    request: Request,
    project: ProjectPath,
    name: AgentName,
    caller: CallerDep,
    services: ServicesDep,
    timeout_s: Annotated[
        float,
        Query(
            ge=0,
            le=int(MAX_WAIT_S),
            allow_inf_nan=False,
            description="Give up after this many seconds (at most 60).",
        ),
    ] = 30.0,
    since_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Only messages with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    mark_read: bool = False,
) -> Inbox:
    """The agent's unread mail as soon as there is any (from any replica), or empty at the timeout."""
    wait = services.live.wait_for_messages(
        caller,
        project=project,
        agent=name,
        timeout_s=timeout_s,
        since_id=since_id,
        limit=limit,
        mark_read=mark_read,
    )
    # A client gone ends the wait (and gives its held-wait slot back) at once (api/held.py).
    return await while_connected(request.receive, wait, Inbox(items=[], unread=0, next_since_id=None))
