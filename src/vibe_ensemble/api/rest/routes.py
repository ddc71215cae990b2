"""REST routes under /api/v1: each one a thin call into a service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from vibe_ensemble.api.rest.deps import CallerDep, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    AgentIn,
    ClaimIn,
    CloseIn,
    CommentIn,
    HeartbeatIn,
    IdsIn,
    IssueIn,
    IssuePatch,
    MessageIn,
    ProjectIn,
    RetireIn,
    TokenIn,
    TokenOut,
)
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, IssueStatus
from vibe_ensemble.domain.models import (
    Agent,
    AuditPage,
    ClosedIssue,
    Comment,
    Credential,
    EventPage,
    HeartbeatResult,
    Inbox,
    Issue,
    IssueDetail,
    IssuePage,
    Message,
    Project,
)
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.services.issues import UNSET

router = APIRouter(prefix="/api/v1")
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
P = "/projects/{project}"

# --- projects -------------------------------------------------------------------


@router.get("/projects", tags=["projects"])
async def list_projects(caller: CallerDep, services: ServicesDep) -> list[Project]:
    return await services.projects.list(caller)


@router.post("/projects", status_code=status.HTTP_201_CREATED, tags=["projects"])
async def create_project(body: ProjectIn, caller: CallerDep, services: ServicesDep) -> Project:
    return await services.projects.create(caller, **body.model_dump())


@router.get(P, tags=["projects"])
async def get_project(project: str, caller: CallerDep, services: ServicesDep) -> Project:
    return await services.projects.get(caller, project)


# --- agents ---------------------------------------------------------------------


@router.get(P + "/agents", tags=["agents"])
async def list_agents(
    project: str,
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
async def register_agent(project: str, body: AgentIn, caller: CallerDep, services: ServicesDep) -> Agent:
    return await services.agents.register(caller, project=project, **body.model_dump())


@router.post(P + "/agents/{name}/heartbeat", tags=["agents"])
async def heartbeat(
    project: str, name: str, body: HeartbeatIn, caller: CallerDep, services: ServicesDep
) -> HeartbeatResult:
    return await services.agents.heartbeat(
        caller, project=project, agent=name, status=body.status, activity=body.activity
    )


@router.post(P + "/agents/{name}/retire", tags=["agents"])
async def retire_agent(
    project: str, name: str, body: RetireIn, caller: CallerDep, services: ServicesDep
) -> Agent:
    return await services.agents.retire(caller, project=project, name=name, reason=body.reason)


# --- issues ---------------------------------------------------------------------


@router.get(P + "/issues", tags=["issues"])
async def list_issues(
    project: str,
    caller: CallerDep,
    services: ServicesDep,
    issue_status: Annotated[IssueStatus | None, Query(alias="status")] = None,
    assignee: Annotated[str | None, Query(max_length=64)] = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    ready: bool | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> IssuePage:
    return await services.issues.list(
        caller,
        project=project,
        status=issue_status,
        assignee=assignee,
        label=label,
        ready=ready,
        query=q,
        limit=limit,
        cursor=cursor,
    )


@router.post(P + "/issues", status_code=status.HTTP_201_CREATED, tags=["issues"])
async def create_issue(project: str, body: IssueIn, caller: CallerDep, services: ServicesDep) -> Issue:
    return await services.issues.create(caller, project=project, **body.model_dump())


@router.post(P + "/issues/claim", tags=["issues"])
async def claim_best_issue(project: str, body: ClaimIn, caller: CallerDep, services: ServicesDep) -> Issue:
    return await services.issues.claim(caller, None, project=project, agent=body.agent)


@router.get(P + "/issues/{issue_id}", tags=["issues"])
async def get_issue(project: str, issue_id: IdPath, caller: CallerDep, services: ServicesDep) -> IssueDetail:
    return await services.issues.get(caller, issue_id, project=project)


@router.patch(P + "/issues/{issue_id}", tags=["issues"])
async def update_issue(
    project: str, issue_id: IdPath, body: IssuePatch, caller: CallerDep, services: ServicesDep
) -> Issue:
    given = body.model_fields_set
    return await services.issues.update(
        caller,
        issue_id,
        project=project,
        agent=body.agent,
        title=body.title,
        body=body.body,
        status=body.status,
        priority=body.priority,
        labels=body.labels,
        depends_on=body.depends_on,
        parent=body.parent if "parent" in given else UNSET,
        assignee=body.assignee if "assignee" in given else UNSET,
        expected_version=body.expected_version,
    )


@router.post(P + "/issues/{issue_id}/claim", tags=["issues"])
async def claim_issue(
    project: str, issue_id: IdPath, body: ClaimIn, caller: CallerDep, services: ServicesDep
) -> Issue:
    return await services.issues.claim(caller, issue_id, project=project, agent=body.agent)


@router.post(P + "/issues/{issue_id}/comments", status_code=status.HTTP_201_CREATED, tags=["issues"])
async def comment_issue(
    project: str, issue_id: IdPath, body: CommentIn, caller: CallerDep, services: ServicesDep
) -> Comment:
    return await services.issues.comment(caller, issue_id, body.body, project=project, agent=body.agent)


@router.post(P + "/issues/{issue_id}/close", tags=["issues"])
async def close_issue(
    project: str, issue_id: IdPath, body: CloseIn, caller: CallerDep, services: ServicesDep
) -> ClosedIssue:
    return await services.issues.close(
        caller, issue_id, body.resolution, status=body.status, project=project, agent=body.agent
    )


# --- mail -----------------------------------------------------------------------


@router.post(P + "/messages", status_code=status.HTTP_201_CREATED, tags=["messages"])
async def send_message(project: str, body: MessageIn, caller: CallerDep, services: ServicesDep) -> Message:
    return await services.messages.send(caller, project=project, **body.model_dump())


@router.get(P + "/agents/{name}/inbox", tags=["messages"])
async def fetch_inbox(
    project: str,
    name: str,
    caller: CallerDep,
    services: ServicesDep,
    unread_only: bool = False,
    since_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
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
    project: str, name: str, body: IdsIn, caller: CallerDep, services: ServicesDep
) -> list[int]:
    return await services.messages.mark_read(caller, body.ids, project=project, agent=name)


@router.post(P + "/agents/{name}/inbox/ack", tags=["messages"])
async def acknowledge(
    project: str, name: str, body: IdsIn, caller: CallerDep, services: ServicesDep
) -> list[int]:
    return await services.messages.acknowledge(caller, body.ids, project=project, agent=name)


# --- events ---------------------------------------------------------------------


@router.get("/events", tags=["events"])
async def list_events(
    caller: CallerDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Return events with a larger id.")] = 0,
    project: Annotated[str | None, Query(max_length=64)] = None,
    types: Annotated[
        list[str] | None, Query(max_length=20, description="Event types; `issue.*` for a family.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    return await services.events.page(caller, after=after, project=project, types=types, limit=limit)


# --- tokens (admin) -------------------------------------------------------------


@router.get("/tokens", tags=["tokens"])
async def list_tokens(caller: CallerDep, services: ServicesDep) -> list[Credential]:
    return await services.tokens.list(caller)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
async def create_token(body: TokenIn, caller: CallerDep, services: ServicesDep) -> TokenOut:
    cred, secret = await services.tokens.create(caller, **body.model_dump())
    return TokenOut(
        token=secret, id=cred.id, prefix=cred.prefix, role=cred.role, project=cred.project, agent=cred.agent
    )


@router.delete("/tokens/{token_id}", tags=["tokens"])
async def revoke_token(token_id: IdPath, caller: CallerDep, services: ServicesDep) -> Credential:
    return await services.tokens.revoke(caller, token_id)


# --- audit (admin) --------------------------------------------------------------


@router.get("/audit", tags=["audit"])
async def list_audit(
    caller: CallerDep,
    services: ServicesDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Entries older than this id.")] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="An action, or a family: `auth.*`.")
    ] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=16, description="ok, denied or failed.")] = None,
    since: Annotated[datetime | None, Query(description="Only entries at or after this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    return await services.audit.page(
        caller, before=before, action=action, actor=actor, outcome=outcome, since=since, limit=limit
    )
