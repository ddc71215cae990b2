"""What needs a person: the dashboard's "Needs attention" rules and the items they find.

Each rule is a question about the project's state at one moment (docs/dashboard.md#needs-attention):

- silent holder: an agent that is offline, or has not been heard from for `silent_after`, while it
  still holds in-progress issues or live leases — its work is stuck until someone releases it;
- blocked issue: an issue marked blocked, or open and waiting on unfinished dependencies — with the
  latest comment as its reason and the dependencies it waits on;
- unacknowledged mail: a message that asked for acknowledgement and, `ack_after` after it was sent,
  still has recipients who have not acknowledged it;
- expiring lease: a live lease that ends within `lease_warning` while its holder is working (status
  working, or an issue in progress) — the work may lose its protection;
- conflict: in the last `conflict_window`, a lease request refused because another agent holds the
  path (`reservation.refused`: a strict request refused whole, or an advisory one in part), or a
  commit the guard refused (`reservation.refused` with source "guard").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vibe_ensemble.domain.enums import AgentStatus, Importance, IssueStatus
from vibe_ensemble.domain.models import Reservation


@dataclass(frozen=True)
class AttentionRules:
    """The thresholds of the rules (from the settings `attention_*`)."""

    silent_after: timedelta = timedelta(seconds=120)
    ack_after: timedelta = timedelta(minutes=10)
    lease_warning: timedelta = timedelta(minutes=5)
    conflict_window: timedelta = timedelta(minutes=30)
    limit: int = 50  # items shown per rule (the count says how many there are)


@dataclass
class IssueRef:
    id: int
    title: str
    status: IssueStatus
    priority: str
    assignee: str | None


@dataclass
class SilentHolder:
    agent: str
    role: str
    status: AgentStatus
    last_seen: datetime
    issues: list[IssueRef]
    leases: list[Reservation]


@dataclass
class BlockedIssue:
    issue: IssueRef
    marked: bool  # status blocked (else: open, waiting on dependencies)
    reason: str  # the latest comment, "" when there is none
    reason_by: str
    waits_on: list[IssueRef]  # unfinished dependencies


@dataclass
class UnackedMail:
    message_id: int
    thread_id: str
    subject: str
    sender: str
    importance: Importance
    sent_at: datetime
    waiting_on: list[str]  # recipients who have not acknowledged


@dataclass
class ExpiringLease:
    lease: Reservation
    holder_status: AgentStatus
    working_on: list[IssueRef]  # the holder's issues in progress


@dataclass
class Conflict:
    event_id: int
    time: datetime
    agent: str
    source: str  # "strict", "advisory" or "guard"
    paths: list[str]
    holders: list[str]  # who holds what stood in the way


@dataclass
class Attention:
    project: str
    now: datetime
    rules: AttentionRules
    silent: list[SilentHolder] = field(default_factory=list)
    blocked: list[BlockedIssue] = field(default_factory=list)
    blocked_total: int = 0
    unacked: list[UnackedMail] = field(default_factory=list)
    expiring: list[ExpiringLease] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    recheck_at: datetime | None = None  # when time alone next changes the answer (no event says so)

    @property
    def total(self) -> int:
        return (
            len(self.silent)
            + self.blocked_total
            + len(self.unacked)
            + len(self.expiring)
            + len(self.conflicts)
        )


def is_silent(status: AgentStatus, last_seen: datetime, now: datetime, rules: AttentionRules) -> bool:
    return status == AgentStatus.OFFLINE or last_seen <= now - rules.silent_after


def earliest(times: list[datetime], now: datetime) -> datetime | None:
    """The earliest of `times` still in the future, if any."""
    future = [t for t in times if t > now]
    return min(future) if future else None
