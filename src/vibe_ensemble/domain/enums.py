"""The closed vocabularies of the domain."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class AgentRole(StrEnum):
    COORDINATOR = "coordinator"
    WORKER = "worker"
    OBSERVER = "observer"


class AgentStatus(StrEnum):
    IDLE = "idle"
    WORKING = "working"
    BLOCKED = "blocked"
    OFFLINE = "offline"


class ReportedStatus(StrEnum):
    """The statuses an agent reports for itself in a heartbeat: `offline` is the server's to set."""

    IDLE = "idle"
    WORKING = "working"
    BLOCKED = "blocked"


class IssueStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    REVIEW = "review"
    DONE = "done"
    CLOSED = "closed"

    @property
    def finished(self) -> bool:
        return self in (IssueStatus.DONE, IssueStatus.CLOSED)


class Priority(StrEnum):
    P0 = "p0"
    P1 = "p1"
    P2 = "p2"
    P3 = "p3"


class Importance(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class KnowledgeKind(StrEnum):
    PATTERN = "pattern"
    PRACTICE = "practice"
    GUIDELINE = "guideline"
    DECISION = "decision"
    NOTE = "note"


class TokenRole(StrEnum):
    """The role of a credential; what it may do is in `domain.permissions`."""

    ADMIN = "admin"
    COORDINATOR = "coordinator"
    WORKER = "worker"
    VIEWER = "viewer"


class ReserveMode(StrEnum):
    ADVISORY = "advisory"
    STRICT = "strict"


def by_value(kind: type[E]) -> dict[str, E]:
    """`kind`'s members by value, for reading rows: `by_value(Importance)[text]` is
    `Importance(text)` at the cost of a dict lookup, where the enum's call is two Python calls
    (every row of an inbox page reads one). An unknown value raises KeyError."""
    return {member.value: member for member in kind}
