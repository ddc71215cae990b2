"""The domain's records, as plain dataclasses.

The front doors serialise these directly (FastAPI and the MCP SDK both understand
dataclasses), so there is one shape per concept, not one per door.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vibe_ensemble.domain.enums import (
    AgentRole,
    AgentStatus,
    Importance,
    IssueStatus,
    KnowledgeKind,
    Priority,
    TokenRole,
)


@dataclass
class Project:
    id: int
    slug: str
    name: str
    description: str
    repo: str
    created_at: datetime


@dataclass
class Agent:
    id: int
    project: str
    name: str
    role: AgentRole
    status: AgentStatus
    capabilities: list[str]
    program: str
    model: str
    description: str
    activity: str
    registered_at: datetime
    last_seen: datetime
    retired_at: datetime | None = None


@dataclass
class Issue:
    id: int
    project: str
    title: str
    body: str
    status: IssueStatus
    priority: Priority
    labels: list[str]
    assignee: str | None
    parent: int | None
    depends_on: list[int]
    created_by: str | None
    resolution: str | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass
class Comment:
    id: int
    issue_id: int
    author: str
    body: str
    created_at: datetime


@dataclass
class IssueDetail:
    issue: Issue
    comments: list[Comment]
    dependencies: list[Issue]
    dependants: list[Issue]
    ready: bool


@dataclass
class IssuePage:
    items: list[Issue]
    next_cursor: str | None


@dataclass
class ClosedIssue:
    issue: Issue
    now_ready: list[Issue] = field(default_factory=list)


@dataclass
class Message:
    id: int
    project: str
    sender: str
    recipients: list[str]
    to_role: AgentRole | None
    broadcast: bool
    subject: str
    body: str
    thread_id: str
    importance: Importance
    ack_required: bool
    created_at: datetime


@dataclass
class InboxItem:
    message: Message
    read_at: datetime | None
    acked_at: datetime | None


@dataclass
class Inbox:
    items: list[InboxItem]
    unread: int
    next_since_id: int | None


@dataclass
class Reservation:
    id: int
    project: str
    holder: str
    pattern: str
    exclusive: bool
    reason: str
    created_at: datetime
    expires_at: datetime
    issue: int | None = None  # the issue (of the same project) the lease serves, when the holder named one


@dataclass
class LeaseConflict:
    """A lease of another agent that stands in the way of `path`."""

    path: str  # the requested pattern
    holder: str
    pattern: str  # the holder's pattern
    exclusive: bool
    reason: str
    expires_at: datetime
    reservation_id: int


@dataclass
class ReservationResult:
    """What reserve_paths did: the leases granted (or extended) and what stood in the way."""

    granted: list[Reservation]
    conflicts: list[LeaseConflict]
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReleaseResult:
    released: list[Reservation]
    not_held: list[str]  # requested patterns the caller held no lease on


@dataclass
class PathCheck:
    """check_paths: who holds what would conflict, and which paths are free."""

    conflicts: list[LeaseConflict]
    free: list[str]


@dataclass
class KnowledgeEntry:
    id: int
    project: str
    kind: KnowledgeKind
    title: str
    body: str
    tags: list[str]
    issue_ids: list[int]
    author: str
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass
class KnowledgeVersion:
    """An earlier version of a knowledge entry, kept when the entry was updated."""

    version: int
    kind: KnowledgeKind
    title: str
    body: str
    tags: list[str]
    issue_ids: list[int]
    author: str
    created_at: datetime


@dataclass
class KnowledgeDetail:
    entry: KnowledgeEntry
    versions: list[KnowledgeVersion]  # earlier versions, newest first


@dataclass
class KnowledgeHit:
    """A search result; `snippet` marks the matched words with « and »."""

    id: int
    title: str
    kind: KnowledgeKind
    tags: list[str]
    score: float
    snippet: str


@dataclass
class Event:
    id: int
    time: datetime
    project: str | None
    type: str
    actor: str
    payload: dict[str, Any]


@dataclass
class EventPage:
    items: list[Event]
    last_id: int


@dataclass
class Credential:
    """A token's record; never holds the token itself."""

    id: int
    prefix: str
    label: str
    role: TokenRole
    project: str | None
    agent: str | None
    tool_profile: str | None  # the MCP tools it is served (core, full); None: the server's VIBE_TOOL_PROFILE
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass
class AuditEntry:
    """One security-relevant act: who, what, when, from where, and how it ended. Never holds a token."""

    id: int
    time: datetime
    actor: str
    action: str  # auth.failed, access.denied, token.created, project.created, …
    outcome: str  # ok, denied, failed
    remote: str
    details: dict[str, Any]


@dataclass
class AuditPage:
    items: list[AuditEntry]
    next_before: int | None  # pass as `before` for older entries; None when there are no more


@dataclass
class HeartbeatResult:
    """What waits for an agent: its state, its mail, its work and its leases."""

    agent: Agent
    unread_messages: int
    urgent_unread: list[InboxItem]
    assigned_issues: list[Issue]
    ready_issues: list[Issue]
    expiring_reservations: list[Reservation]
