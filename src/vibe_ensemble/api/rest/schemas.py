"""Request bodies. Responses are the domain dataclasses themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vibe_ensemble.domain.enums import AgentRole, AgentStatus, Importance, IssueStatus, Priority, TokenRole
from vibe_ensemble.domain.rules import MAX_ID

Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectIn(Body):
    slug: str = Field(max_length=64)
    name: str | None = Field(None, max_length=200)
    description: str = Field("", max_length=65_536)
    repo: str = Field("", max_length=1000)


class AgentIn(Body):
    name: str | None = Field(None, max_length=64)
    role: AgentRole = AgentRole.WORKER
    capabilities: list[str] = Field(default_factory=list, max_length=32)
    program: str = Field("", max_length=200)
    model: str = Field("", max_length=200)
    description: str = Field("", max_length=65_536)


class HeartbeatIn(Body):
    status: AgentStatus | None = None
    activity: str | None = Field(None, max_length=1000)


class RetireIn(Body):
    reason: str = Field("", max_length=1000)


class IssueIn(Body):
    title: str = Field(max_length=200)
    body: str = Field("", max_length=65_536)
    priority: Priority = Priority.P2
    labels: list[str] = Field(default_factory=list, max_length=32)
    depends_on: list[Id] = Field(default_factory=list, max_length=100)
    parent: Id | None = None
    assignee: str | None = None
    agent: str | None = None


class IssuePatch(Body):
    title: str | None = Field(None, max_length=200)
    body: str | None = Field(None, max_length=65_536)
    status: IssueStatus | None = None
    priority: Priority | None = None
    labels: list[str] | None = Field(None, max_length=32)
    depends_on: list[Id] | None = Field(None, max_length=100)
    parent: Id | None = None
    assignee: str | None = None
    expected_version: Annotated[int, Field(ge=0, le=MAX_ID)] | None = None
    agent: str | None = None


class ClaimIn(Body):
    agent: str | None = None


class CommentIn(Body):
    body: str = Field(max_length=65_536)
    agent: str | None = None


class CloseIn(Body):
    resolution: str = Field(max_length=65_536)
    status: IssueStatus = IssueStatus.DONE
    agent: str | None = None


class MessageIn(Body):
    subject: str = Field(max_length=200)
    body: str = Field(max_length=65_536)
    to: list[str] = Field(default_factory=list, max_length=200)
    to_role: AgentRole | None = None
    broadcast: bool = False
    thread_id: str | None = Field(None, max_length=200)
    importance: Importance = Importance.NORMAL
    ack_required: bool = False
    agent: str | None = None


class IdsIn(Body):
    ids: list[Id] = Field(min_length=1, max_length=500)


class TokenIn(Body):
    role: TokenRole
    project: str | None = None
    agent: str | None = None
    label: str = Field("", max_length=200)
    expires_at: datetime | None = None
    tool_profile: str | None = None


class TokenOut(BaseModel):
    token: str = Field(description="The secret. Shown once; store it now.")
    id: int
    prefix: str
    role: TokenRole
    project: str | None
    agent: str | None
