"""The permission matrix: which token role may perform which operation.

This is the one place authorisation is decided. Every service method names its
operation and calls `Caller.require`; every front door (MCP, REST, live feed,
dashboard) goes through a service, so none can skip it. `docs/security.md`
renders this table.
"""

from __future__ import annotations

from enum import StrEnum

from vibe_ensemble.domain.enums import TokenRole


class Op(StrEnum):
    PROJECT_READ = "project.read"
    PROJECT_ADMIN = "project.admin"
    AGENT_READ = "agent.read"
    AGENT_ACT = "agent.act"  # register, heartbeat: acting as an agent
    AGENT_RETIRE = "agent.retire"
    AGENT_COORDINATE = "agent.coordinate"  # register (or re-attach) an agent in the coordinator role
    ISSUE_READ = "issue.read"
    ISSUE_WRITE = "issue.write"  # create, update, comment, claim, close
    ISSUE_ASSIGN_OTHERS = "issue.assign_others"
    ISSUE_CHANGE_CLAIMED = "issue.change_claimed"  # update, reassign or close an issue another agent holds
    MESSAGE_READ = "message.read"  # one's own inbox
    MESSAGE_SEND = "message.send"
    MESSAGE_OVERSEE = "message.oversee"  # read every agent's mail of the project, bodies too (dashboard)
    RESERVATION_READ = "reservation.read"
    RESERVATION_WRITE = "reservation.write"
    KNOWLEDGE_READ = "knowledge.read"
    KNOWLEDGE_WRITE = "knowledge.write"
    EVENT_READ = "event.read"
    TOKEN_ADMIN = "token.admin"  # noqa: S105 - an operation name  # nosec B105
    AUDIT_READ = "audit.read"


_READ = {
    Op.PROJECT_READ,
    Op.AGENT_READ,
    Op.ISSUE_READ,
    Op.RESERVATION_READ,
    Op.KNOWLEDGE_READ,
    Op.EVENT_READ,
}
_WORK = _READ | {
    Op.AGENT_ACT,
    Op.ISSUE_WRITE,
    Op.MESSAGE_READ,
    Op.MESSAGE_SEND,
    Op.RESERVATION_WRITE,
    Op.KNOWLEDGE_WRITE,
}
_COORDINATE = _WORK | {
    Op.AGENT_RETIRE,
    Op.AGENT_COORDINATE,
    Op.MESSAGE_OVERSEE,
    Op.ISSUE_ASSIGN_OTHERS,
    Op.ISSUE_CHANGE_CLAIMED,
}

PERMISSIONS: dict[TokenRole, frozenset[Op]] = {
    TokenRole.VIEWER: frozenset(_READ),
    TokenRole.WORKER: frozenset(_WORK),
    TokenRole.COORDINATOR: frozenset(_COORDINATE),
    TokenRole.ADMIN: frozenset(Op),
}


GLOBAL_OPS: frozenset[Op] = frozenset({Op.PROJECT_ADMIN, Op.TOKEN_ADMIN, Op.AUDIT_READ})
"""Operations that reach beyond one project: only a token without a project scope may do them."""


def allowed(role: TokenRole, op: Op) -> bool:
    return op in PERMISSIONS[role]


CLAIMED_ISSUE_RULE = (
    "an issue claimed by an agent may be changed (updated, reassigned, unassigned or closed) only by "
    "that agent, a coordinator or an admin; anyone else may comment on it"
)
"""The claimed-issue rule: `issue.write` suffices for an unclaimed issue or one's own; changing an
issue another agent holds also needs `issue.change_claimed`."""


def may_change_issue(role: TokenRole, actor: str, assignee: str | None) -> bool:
    """Whether `actor` (the acting agent, or `token:…` for a token acting as no agent) with a token
    of `role` may change an issue held by `assignee` (None: unclaimed)."""
    return assignee is None or assignee == actor or allowed(role, Op.ISSUE_CHANGE_CLAIMED)


def roles_allowed(op: Op) -> list[TokenRole]:
    """The token roles that may perform `op`, in the order of `TokenRole`."""
    return [role for role in TokenRole if allowed(role, op)]
