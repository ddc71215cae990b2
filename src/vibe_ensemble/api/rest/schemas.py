"""Request bodies. Responses are the domain dataclasses themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Body as JsonBody
from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, Strict

from vibe_ensemble.domain.enums import (
    AgentRole,
    Importance,
    IssueStatus,
    KnowledgeKind,
    Priority,
    ReportedStatus,
    ReserveMode,
    TokenRole,
)
from vibe_ensemble.domain.rules import (
    MAX_BODY,
    MAX_DEPENDENCIES,
    MAX_ID,
    MAX_LABEL,
    MAX_LABELS,
    MAX_LINE,
    MAX_NAME,
    MAX_NOTE,
    MAX_PATTERN,
    MAX_TITLE,
)
from vibe_ensemble.services.knowledge import MAX_ISSUE_LINKS
from vibe_ensemble.services.messages import MAX_IDS, MAX_RECIPIENTS
from vibe_ensemble.services.reservations import (
    DEFAULT_TTL_S,
    FILES_DOC,
    MAX_CHECK_PATHS,
    MAX_RESERVE_PATHS,
    MAX_TTL_S,
    MIN_TTL_S,
)

# A body is JSON, and its numbers and booleans are read as JSON's types: strictly, so `true` is
# not the id 1, `"3"` is not 3 and `"yes"` is not a boolean (pydantic's lax mode would take them).
Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]
Flag = Annotated[bool, Strict()]
AgentName = Annotated[str, Path(max_length=MAX_NAME, description="The agent's name.")]  # in a route's path
# A list's entries have their limits too, published and refused naming the entry (`labels[2]`)
Label = Annotated[str, Field(max_length=MAX_LABEL)]  # a label, tag or capability
Pattern = Annotated[str, Field(max_length=MAX_PATTERN)]  # a path, glob or named resource


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectIn(Body):
    slug: str = Field(max_length=MAX_NAME)
    name: str | None = Field(None, max_length=MAX_LINE)
    description: str = Field("", max_length=MAX_BODY)
    repo: str = Field("", max_length=MAX_NOTE)


class AgentIn(Body):
    """Registering again (re-attaching) keeps what is omitted; an empty value clears it."""

    name: str | None = Field(None, max_length=MAX_NAME)
    role: AgentRole | None = Field(None, description="A new agent is a worker unless given.")
    capabilities: list[Label] | None = Field(None, max_length=MAX_LABELS)
    program: str | None = Field(None, max_length=MAX_LINE)
    model: str | None = Field(None, max_length=MAX_LINE)
    description: str | None = Field(None, max_length=MAX_BODY)


class HeartbeatIn(Body):
    status: ReportedStatus | None = Field(
        None, description="idle, working or blocked (offline is the server's to set)."
    )
    activity: str | None = Field(None, max_length=MAX_NOTE)


class RetireIn(Body):
    reason: str = Field("", max_length=MAX_NOTE)


class IssueIn(Body):
    title: str = Field(max_length=MAX_TITLE)
    body: str = Field("", max_length=MAX_BODY)
    priority: Priority = Priority.P2
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    depends_on: list[Id] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    parent: Id | None = None
    assignee: str | None = Field(default=None, max_length=MAX_NAME)
    agent: str | None = Field(None, max_length=MAX_NAME)


class IssuePatch(Body):
    title: str | None = Field(None, max_length=MAX_TITLE)
    body: str | None = Field(None, max_length=MAX_BODY)
    status: IssueStatus | None = None
    priority: Priority | None = None
    labels: list[Label] | None = Field(None, max_length=MAX_LABELS)
    depends_on: list[Id] | None = Field(None, max_length=MAX_DEPENDENCIES)
    parent: Id | None = None
    assignee: str | None = Field(default=None, max_length=MAX_NAME)
    expected_version: Annotated[int, Strict(), Field(ge=0, le=MAX_ID)] | None = None
    agent: str | None = Field(None, max_length=MAX_NAME)


class ClaimIn(Body):
    agent: str | None = Field(None, max_length=MAX_NAME)


class CommentIn(Body):
    body: str = Field(max_length=MAX_BODY)
    agent: str | None = Field(None, max_length=MAX_NAME)


class CloseIn(Body):
    resolution: str = Field(max_length=MAX_BODY)
    status: IssueStatus = IssueStatus.DONE
    agent: str | None = Field(None, max_length=MAX_NAME)


class MessageIn(Body):
    subject: str = Field(max_length=MAX_TITLE)
    body: str = Field(max_length=MAX_BODY)
    to: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(
        default_factory=list, max_length=MAX_RECIPIENTS
    )
    to_role: AgentRole | None = None
    broadcast: Flag = False
    thread_id: str | None = Field(None, max_length=MAX_LINE)
    importance: Importance = Importance.NORMAL
    ack_required: Flag = False
    agent: str | None = Field(None, max_length=MAX_NAME)


class IdsIn(Body):
    ids: list[Id] = Field(min_length=1, max_length=MAX_IDS)


ToolProfile = Literal["core", "full"]  # services/tokens.TOOL_PROFILES
TOOL_PROFILE_DOC = (
    "The MCP tools the token sees: core, or full (adds admin and project tools); default: the server's."
)


class TokenIn(Body):
    role: TokenRole
    project: str | None = Field(None, max_length=MAX_NAME)
    agent: str | None = Field(None, max_length=MAX_NAME)
    label: str = Field("", max_length=MAX_LINE)
    expires_at: datetime | None = None
    tool_profile: ToolProfile | None = Field(None, description=TOOL_PROFILE_DOC)


class TokenOut(BaseModel):
    token: str = Field(description="The secret. Shown once; store it now.")
    id: int
    prefix: str
    role: TokenRole
    project: str | None
    agent: str | None
    tool_profile: str | None = Field(
        description="The MCP tools it is served: core or full; null: the server's (VIBE_TOOL_PROFILE)."
    )


PATHS_DOC = (
    "Repository-relative paths or git globs (src/api/**, **/*.py), or named resources (service://staging-db)."
)


class ReserveIn(Body):
    paths: list[Pattern] = Field(description=PATHS_DOC, min_length=1, max_length=MAX_RESERVE_PATHS)
    exclusive: Flag = True
    ttl_s: Annotated[int, Strict()] = Field(
        DEFAULT_TTL_S, ge=MIN_TTL_S, le=MAX_TTL_S, description="Seconds until the lease ends by itself."
    )
    reason: str = Field("", max_length=MAX_NOTE)
    issue: Id | None = Field(None, description="The id of the issue (of this project) the leases serve.")
    mode: ReserveMode = Field(
        ReserveMode.ADVISORY, description="advisory: grant what is free; strict: nothing on any conflict."
    )
    idempotency_key: str | None = Field(None, max_length=MAX_LINE)
    agent: str | None = Field(None, max_length=MAX_NAME)


class ReleaseIn(Body):
    paths: list[Pattern] | None = Field(
        None, max_length=MAX_CHECK_PATHS, description="Patterns exactly as reserved; omit to release all."
    )
    agent: str | None = Field(None, max_length=MAX_NAME)


class CheckIn(Body):
    paths: list[Pattern] = Field(description=PATHS_DOC, min_length=1, max_length=MAX_CHECK_PATHS)
    exclusive: Flag = Field(True, description="false: report only exclusive holders.")
    agent: str | None = Field(None, max_length=MAX_NAME, description="Ignore this agent's own leases.")
    report: Flag = Field(
        False, description="Record the conflicts found as a refusal (the commit guard, refusing a commit)."
    )
    files: Flag = Field(False, description=FILES_DOC)


class KnowledgeIn(Body):
    kind: KnowledgeKind
    title: str = Field(max_length=MAX_TITLE)
    body: str = Field(max_length=MAX_BODY)
    tags: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    issue_ids: list[Id] = Field(default_factory=list, max_length=MAX_ISSUE_LINKS)
    agent: str | None = Field(None, max_length=MAX_NAME)


class KnowledgePatch(Body):
    kind: KnowledgeKind | None = None
    title: str | None = Field(None, max_length=MAX_TITLE)
    body: str | None = Field(None, max_length=MAX_BODY)
    tags: list[Label] | None = Field(None, max_length=MAX_LABELS)
    issue_ids: list[Id] | None = Field(None, max_length=MAX_ISSUE_LINKS)
    expected_version: Id | None = None
    agent: str | None = Field(None, max_length=MAX_NAME)


# A body whose fields are all optional may be left out (`curl -X POST` with no `-d`): no body is `{}`.
# A route takes these instead of the model itself (tests/e2e/test_foundation_rest.py checks every route).
AgentBody = Annotated[AgentIn, JsonBody(default_factory=AgentIn)]
HeartbeatBody = Annotated[HeartbeatIn, JsonBody(default_factory=HeartbeatIn)]
RetireBody = Annotated[RetireIn, JsonBody(default_factory=RetireIn)]
IssuePatchBody = Annotated[IssuePatch, JsonBody(default_factory=IssuePatch)]
ClaimBody = Annotated[ClaimIn, JsonBody(default_factory=ClaimIn)]
ReleaseBody = Annotated[ReleaseIn, JsonBody(default_factory=ReleaseIn)]
KnowledgePatchBody = Annotated[KnowledgePatch, JsonBody(default_factory=KnowledgePatch)]
