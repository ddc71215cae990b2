"""REST routes for issues: create, list, read, change, claim, comment, close. Thin calls into the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, IdPath, P, ProjectPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    ClaimBody,
    CloseIn,
    CommentIn,
    IssueIn,
    IssuePatchBody,
)
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.models import (
    ClosedIssue,
    Comment,
    Issue,
    IssueDetail,
    IssuePage,
)
from vibe_ensemble.domain.rules import MAX_CURSOR, MAX_LABEL, MAX_LINE, MAX_LIST_LIMIT, MAX_NAME
from vibe_ensemble.services.issues import UNSET

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get(P + "/issues", tags=["issues"])
async def list_issues(
    project: ProjectPath,
    caller: CallerDep,
    services: ServicesDep,
    issue_status: Annotated[IssueStatus | None, Query(alias="status")] = None,
    assignee: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
    label: Annotated[
        str | None, Query(max_length=MAX_LABEL, description="Only issues with this label (any letter case).")
    ] = None,
    ready: bool | None = None,
    query: Annotated[
        str | None, Query(max_length=MAX_LINE, description="Text to find in title or body.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> IssuePage:
    return await services.issues.list(
        caller,
        project=project,
        status=issue_status,
        assignee=assignee,
        label=label,
        ready=ready,
        query=query,
        limit=limit,
        cursor=cursor,
    )


@router.post(P + "/issues", status_code=status.HTTP_201_CREATED, tags=["issues"])
async def create_issue(
    project: ProjectPath, body: IssueIn, caller: CallerDep, services: ServicesDep
) -> Issue:
    return await services.issues.create(caller, project=project, **body.model_dump())


@router.post(P + "/issues/claim", tags=["issues"])
async def claim_best_issue(
    project: ProjectPath, body: ClaimBody, caller: CallerDep, services: ServicesDep
) -> Issue:
    return await services.issues.claim(caller, None, project=project, agent=body.agent)


@router.get(P + "/issues/{issue_id}", tags=["issues"])
async def get_issue(
    project: ProjectPath, issue_id: IdPath, caller: CallerDep, services: ServicesDep
) -> IssueDetail:
    return await services.issues.get(caller, issue_id, project=project)


@router.patch(P + "/issues/{issue_id}", tags=["issues"])
async def update_issue(
    project: ProjectPath, issue_id: IdPath, body: IssuePatchBody, caller: CallerDep, services: ServicesDep
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
    project: ProjectPath, issue_id: IdPath, body: ClaimBody, caller: CallerDep, services: ServicesDep
) -> Issue:
    return await services.issues.claim(caller, issue_id, project=project, agent=body.agent)


@router.post(P + "/issues/{issue_id}/comments", status_code=status.HTTP_201_CREATED, tags=["issues"])
async def comment_issue(
    project: ProjectPath, issue_id: IdPath, body: CommentIn, caller: CallerDep, services: ServicesDep
) -> Comment:
    return await services.issues.comment(caller, issue_id, body.body, project=project, agent=body.agent)


@router.post(P + "/issues/{issue_id}/close", tags=["issues"])
async def close_issue(
    project: ProjectPath, issue_id: IdPath, body: CloseIn, caller: CallerDep, services: ServicesDep
) -> ClosedIssue:
    return await services.issues.close(
        caller, issue_id, body.resolution, status=body.status, project=project, agent=body.agent
    )
