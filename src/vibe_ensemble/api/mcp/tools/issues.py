"""MCP tools for issues: create, find, read, change, claim, comment, close."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from vibe_ensemble.api.mcp.context import acting
from vibe_ensemble.api.mcp.params import AgentArg, Id, IssueId, Label, ProjectArg, items, text
from vibe_ensemble.domain.enums import IssueStatus, Priority
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.models import ClosedIssue, Comment, Issue, IssueDetail, IssuePage
from vibe_ensemble.domain.rules import (
    MAX_BODY,
    MAX_CURSOR,
    MAX_ID,
    MAX_LABEL,
    MAX_LABELS,
    MAX_LINE,
    MAX_NAME,
    MAX_TITLE,
)
from vibe_ensemble.services.issues import UNSET


async def create_issue(
    title: Annotated[
        str,
        text("Short imperative summary (at most 200 characters).", MAX_TITLE),
    ],
    body: Annotated[
        str,
        text("Markdown: context, acceptance criteria.", MAX_BODY),
    ] = "",
    priority: Annotated[Priority, Field(description="p0 (urgent) to p3 (someday).")] = Priority.P2,
    labels: Annotated[
        list[Label] | None,
        items("Topics or skills, e.g. ['api'].", MAX_LABELS),
    ] = None,
    depends_on: Annotated[
        list[Id] | None, Field(description="Ids of issues that must finish first.", max_length=100)
    ] = None,
    parent: Annotated[Id | None, Field(description="Id of the parent issue (epic).")] = None,
    assignee: Annotated[str | None, text("Agent to assign (coordinators).", MAX_NAME)] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Issue:
    """Record a unit of work someone should do (a task, a bug, a follow-up you found)."""
    services, caller = acting()
    return await services.issues.create(
        caller,
        project=project,
        agent=agent,
        title=title,
        body=body,
        priority=priority,
        labels=labels,
        depends_on=depends_on,
        parent=parent,
        assignee=assignee,
    )


async def list_issues(
    status: Annotated[IssueStatus | None, Field(description="Only issues in this status.")] = None,
    assignee: Annotated[
        str | None,
        text("Only issues assigned to this agent.", MAX_NAME),
    ] = None,
    label: Annotated[
        str | None,
        text("Only issues with this label (any letter case).", MAX_LABEL),
    ] = None,
    ready: Annotated[bool | None, Field(description="true: only issues ready to claim, best first.")] = None,
    query: Annotated[
        str | None,
        text("Text to find in title or body.", MAX_LINE),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        text("next_cursor from the previous page.", MAX_CURSOR),
    ] = None,
    project: ProjectArg = None,
) -> IssuePage:
    """Find issues: what is ready, what someone works on, what carries a label. Paginated."""
    services, caller = acting()
    return await services.issues.list(
        caller,
        project=project,
        status=status,
        assignee=assignee,
        label=label,
        ready=ready,
        query=query,
        limit=limit,
        cursor=cursor,
    )


async def get_issue(id: IssueId, project: ProjectArg = None) -> IssueDetail:
    """Read an issue in full (comments, dependencies, dependants) before you work on or discuss it."""
    services, caller = acting()
    return await services.issues.get(caller, id, project=project)


async def update_issue(
    id: IssueId,
    title: Annotated[str | None, text("New title.", MAX_TITLE)] = None,
    body: Annotated[str | None, text("New body (replaces it).", MAX_BODY)] = None,
    status: Annotated[IssueStatus | None, Field(description="e.g. blocked, review.")] = None,
    priority: Annotated[Priority | None, Field(description="p0 (urgent) to p3.")] = None,
    labels: Annotated[
        list[Label] | None,
        items("Replaces the labels.", MAX_LABELS),
    ] = None,
    depends_on: Annotated[
        list[Id] | None, Field(description="Replaces the dependencies.", max_length=100)
    ] = None,
    parent: Annotated[
        int | None, Field(description="Id of the parent issue (epic); 0 detaches.", ge=0, le=MAX_ID)
    ] = None,
    assignee: Annotated[
        str | None,
        text("Agent to assign; '' unassigns (an issue in progress goes back to open).", MAX_NAME),
    ] = None,
    expected_version: Annotated[
        int | None,
        Field(description="Fail with a conflict unless the issue is still at this version.", ge=0, le=MAX_ID),
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Issue:
    """Change fields of an issue. Pass expected_version to avoid overwriting someone else's change."""
    services, caller = acting()
    try:
        return await services.issues.update(
            caller,
            id,
            project=project,
            agent=agent,
            title=title,
            body=body,
            status=status,
            priority=priority,
            labels=labels,
            depends_on=depends_on,
            parent=UNSET if parent is None else (parent or None),
            assignee=UNSET if assignee is None else (assignee or None),
            expected_version=expected_version,
        )
    except InvalidInput as exc:
        if exc.field != "fields":
            raise
        # "nothing to change", after the caller was checked (a viewer hears it may not): over MCP
        # a null is an argument not given, so say how to clear what can be
        rule = f"{exc.rule} (null is not given: assignee '' unassigns, parent 0 detaches)"
        raise InvalidInput("fields", rule) from None


async def claim_issue(
    id: Annotated[
        int | None,
        Field(description="Issue to claim; omit to claim the best ready one.", ge=1, le=MAX_ID),
    ] = None,
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Issue:
    """Atomically assign an issue to yourself before working on it. Exactly one claimer wins; one
    assigned to you is started, one you already hold in progress is returned unchanged."""
    services, caller = acting()
    return await services.issues.claim(caller, id, project=project, agent=agent)


async def comment_issue(
    id: IssueId,
    body: Annotated[
        str,
        text("Markdown comment: progress, findings, questions.", MAX_BODY),
    ],
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> Comment:
    """Tell others on an issue what you found, decided or need: progress, findings, questions."""
    services, caller = acting()
    return await services.issues.comment(caller, id, body, project=project, agent=agent)


async def close_issue(
    id: IssueId,
    resolution: Annotated[str, text("What was done (or why not).", MAX_BODY)],
    status: Annotated[
        Literal["done", "closed"], Field(description="done: completed; closed: dropped.")
    ] = "done",
    agent: AgentArg = None,
    project: ProjectArg = None,
) -> ClosedIssue:
    """When an issue is done (or dropped), close it with a resolution; lists dependants now ready."""
    services, caller = acting()
    return await services.issues.close(
        caller, id, resolution, status=IssueStatus(status), project=project, agent=agent
    )


TOOLS = (
    create_issue,
    list_issues,
    get_issue,
    update_issue,
    claim_issue,
    comment_issue,
    close_issue,
)
