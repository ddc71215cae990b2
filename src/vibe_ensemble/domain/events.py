"""The catalogue of event types: every type, its family, its payload and what it means.

Services emit only these types (`Transaction.emit` takes an `EventType` and checks the
payload against `CATALOGUE`); the feeds, the dashboard and the event table of
docs/live.md (rendered by `render_table`) all read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class EventFamily(StrEnum):
    """The part of an event type before the dot; feeds filter on `family.*`."""

    PROJECT = "project"
    AGENT = "agent"
    ISSUE = "issue"
    MESSAGE = "message"
    RESERVATION = "reservation"
    KNOWLEDGE = "knowledge"
    TOKEN = "token"  # noqa: S105  # nosec B105
    DATABASE = "database"


class EventType(StrEnum):
    """Every type of event the services emit (the `token` ones name credentials, not secrets)."""

    PROJECT_CREATED = "project.created"
    AGENT_REGISTERED = "agent.registered"
    AGENT_STATUS = "agent.status"
    AGENT_ACTIVITY = "agent.activity"
    AGENT_RETIRED = "agent.retired"
    AGENT_RELEASED = "agent.released"
    ISSUE_CREATED = "issue.created"
    ISSUE_UPDATED = "issue.updated"
    ISSUE_CLAIMED = "issue.claimed"
    ISSUE_COMMENTED = "issue.commented"
    ISSUE_CLOSED = "issue.closed"
    ISSUE_READY = "issue.ready"
    MESSAGE_SENT = "message.sent"
    MESSAGE_READ = "message.read"
    MESSAGE_ACKNOWLEDGED = "message.acknowledged"
    RESERVATION_GRANTED = "reservation.granted"
    RESERVATION_RELEASED = "reservation.released"
    RESERVATION_REFUSED = "reservation.refused"
    KNOWLEDGE_ADDED = "knowledge.added"
    KNOWLEDGE_UPDATED = "knowledge.updated"
    TOKEN_CREATED = "token.created"  # noqa: S105  # nosec B105
    TOKEN_REVOKED = "token.revoked"  # noqa: S105  # nosec B105
    DATABASE_RESTORED = "database.restored"

    @property
    def family(self) -> EventFamily:
        return EventFamily(self.value.split(".", 1)[0])


@dataclass(frozen=True)
class EventSpec:
    """One event type: when it happens and the payload fields it carries (`optional` ones sometimes)."""

    type: EventType
    description: str
    payload: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def family(self) -> EventFamily:
        return self.type.family

    def check(self, payload: Mapping[str, object]) -> None:
        """Raise `ValueError` when a payload lacks a field of this type or carries one it does not declare."""
        missing = set(self.payload) - payload.keys()
        unknown = payload.keys() - set(self.payload) - set(self.optional)
        if missing or unknown:
            raise ValueError(
                f"{self.type.value} payload does not match the catalogue: "
                f"missing {sorted(missing)}, undeclared {sorted(unknown)}"
            )


def _spec(type_: EventType, description: str, *payload: str, optional: Iterable[str] = ()) -> EventSpec:
    return EventSpec(type_, description, payload, tuple(optional))


T = EventType
CATALOGUE: dict[EventType, EventSpec] = {
    s.type: s
    for s in (
        _spec(T.PROJECT_CREATED, "a project was created (the default one at first start)", "slug", "name"),
        _spec(
            T.AGENT_REGISTERED,
            "an agent registered, or re-attached to its name",
            "agent",
            "role",
            "capabilities",
            "reattached",
        ),
        _spec(
            T.AGENT_STATUS,
            "an agent's status changed (`offline` by the presence sweep, with a reason; back to the "
            "status it had when it is heard from again, reason `active again`)",
            "agent",
            "status",
            "previous",
            optional=("reason",),
        ),
        _spec(
            T.AGENT_ACTIVITY,
            "an agent's heartbeat changed its activity line (the same line again is no event; with a "
            "status change, `agent.status` comes too)",
            "agent",
            "activity",
        ),
        _spec(
            T.AGENT_RETIRED,
            "an agent was retired by a coordinator or for idleness; its leases were released and its "
            "open, in-progress and blocked issues unassigned (in progress back to open; "
            "`reopened_issues`)",
            "agent",
            "reason",
            "released_reservations",
            "reopened_issues",
        ),
        _spec(
            T.AGENT_RELEASED,
            "a coordinator released a silent agent's work from the dashboard: its leases ended and its "
            "issues in progress went back to the pool; the agent stays registered",
            "agent",
            "released_reservations",
            "reopened_issues",
        ),
        _spec(T.ISSUE_CREATED, "an issue was created", "id", "title", "priority", "depends_on", "assignee"),
        _spec(T.ISSUE_UPDATED, "fields of an issue changed; `fields` names them", "id", "fields", "version"),
        _spec(T.ISSUE_CLAIMED, "an agent claimed an issue", "id", "title", "assignee"),
        _spec(T.ISSUE_COMMENTED, "a comment was added to an issue", "id", "comment_id"),
        _spec(T.ISSUE_CLOSED, "an issue was finished (done or closed)", "id", "status", "title"),
        _spec(
            T.ISSUE_READY,
            "an issue became ready (created ready, or its last dependency finished)",
            "id",
            "title",
            optional=("unblocked_by",),
        ),
        _spec(
            T.MESSAGE_SENT,
            "mail was delivered (the body is not in the log)",
            "id",
            "sender",
            "recipients",
            "subject",
            "importance",
            "thread_id",
        ),
        _spec(T.MESSAGE_READ, "an agent marked mail read", "agent", "ids"),
        _spec(
            T.MESSAGE_ACKNOWLEDGED, "an agent acknowledged mail (which also marks it read)", "agent", "ids"
        ),
        _spec(
            T.RESERVATION_GRANTED,
            "leases were granted or renewed; `issue` is the issue they serve (null when none was named)",
            "agent",
            "ids",
            "patterns",
            "exclusive",
            "reason",
            "issue",
            "expires_at",
            "renewed",
        ),
        _spec(
            T.RESERVATION_RELEASED,
            "leases ended: `reason` is released, expired or revoked (a person ended it from the dashboard); "
            "at most 500 `ids` an event (a larger release is several)",
            "agent",
            "ids",
            "patterns",
            "reason",
        ),
        _spec(
            T.RESERVATION_REFUSED,
            "a lease request met another agent's lease (`source`: strict, refused whole; advisory, refused "
            "in part) or the commit guard refused a commit (`source`: guard); `conflicts` name the holders",
            "agent",
            "source",
            "paths",
            "conflicts",
        ),
        _spec(T.KNOWLEDGE_ADDED, "a knowledge entry was added", "id", "kind", "title", "tags", "issue_ids"),
        _spec(
            T.KNOWLEDGE_UPDATED,
            "a knowledge entry got a new version; `changed` names the fields",
            "id",
            "version",
            "title",
            "changed",
        ),
        _spec(T.TOKEN_CREATED, "a credential was created (never the secret)", "id", "role", "label", "agent"),
        _spec(T.TOKEN_REVOKED, "a credential was revoked", "id", "label"),
        _spec(
            T.DATABASE_RESTORED,
            "the database was restored from a backup: what happened after `taken_at` is gone, so re-read "
            "what you hold; the ids of later events follow the newest given before the restore",
            "backup",
            "taken_at",
        ),
    )
}
del T


# Events every reader of the log receives, whatever its project and type filters: a restore replaced
# every project's state, and a client that follows one project must learn it to re-read what it holds.
EVERY_READER = frozenset({EventType.DATABASE_RESTORED.value})


def family_of(event_type: str) -> EventFamily | None:
    """The family of a stored event type, or None for a type this catalogue does not know."""
    try:
        return EventType(event_type).family
    except ValueError:
        return None


def render_table() -> str:
    """The event table of docs/live.md: one row per type, in catalogue order."""
    lines = ["| type | family | when | payload |", "|---|---|---|---|"]
    for spec in CATALOGUE.values():
        fields = [f"`{f}`" for f in spec.payload] + [f"(`{f}`)" for f in spec.optional]
        lines.append(
            f"| `{spec.type.value}` | {spec.family.value} | {spec.description} | {', '.join(fields)} |"
        )
    return "\n".join(lines)
