"""Who is calling: the authenticated credential, as the services see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.permissions import (
    CLAIMED_ISSUE_RULE,
    GLOBAL_OPS,
    Op,
    allowed,
    may_change_issue,
)


@dataclass(frozen=True)
class Caller:
    credential_id: int | None
    role: TokenRole
    project: str | None = None  # the token's project scope (a slug), None for all
    agent: str | None = None  # the token's bound agent, None for a team token
    label: str = ""
    tool_profile: str | None = None
    remote: str = ""  # where the request came from (client address), for the audit log
    expires_at: datetime | None = None  # the token's expiry, None when it never expires

    @property
    def display(self) -> str:
        if self.agent:
            return self.agent
        return f"token:{self.label or self.credential_id}"

    def require(self, op: Op) -> None:
        if not allowed(self.role, op):
            raise PermissionDenied(
                f"a {self.role.value} token may not do {op.value}", operation=op.value, role=self.role.value
            )
        if self.project is not None and op in GLOBAL_OPS:
            raise PermissionDenied(
                f"{op.value} reaches beyond one project; a token scoped to {self.project!r} may not do it",
                operation=op.value,
                project=self.project,
            )

    def require_issue_change(self, issue_id: int, actor: str, assignee: str | None) -> None:
        """The claimed-issue rule of the matrix (`CLAIMED_ISSUE_RULE`): refuse `actor` changing an
        issue another agent holds unless this token's role has `issue.change_claimed`."""
        if not may_change_issue(self.role, actor, assignee):
            raise PermissionDenied(
                f"issue {issue_id} is claimed by {assignee}: {CLAIMED_ISSUE_RULE}",
                operation=Op.ISSUE_CHANGE_CLAIMED.value,
                role=self.role.value,
                id=issue_id,
                assignee=assignee,
                actor=actor,
            )

    def project_slug(self, requested: str | None, default: str) -> str:
        """The project a call acts on: the token's scope wins; another one is refused."""
        if self.project is not None:
            if requested is not None and requested != self.project:
                raise PermissionDenied(f"this token is scoped to project {self.project!r}", project=requested)
            return self.project
        return requested or default

    def acts_as_agent(self, requested: str | None) -> bool:
        """Whether a call acts as an agent: the token is bound to one, or a team token names one."""
        return self.agent is not None or bool(requested)

    def acting_agent(self, requested: str | None) -> str:
        """The agent a call acts as: the bound agent, or the `agent` argument of a team token."""
        if self.agent is not None:
            if requested and requested != self.agent:  # "" (an optional field left empty) means "me"
                raise PermissionDenied(
                    f"this token is bound to agent {self.agent!r} and cannot act as {requested!r}",
                    agent=requested,
                )
            return self.agent
        if not requested:
            raise InvalidInput("agent", "required: this token is not bound to an agent, so name the agent")
        return rules.name("agent", requested)  # one pattern: never `token:…`, `system`, markup or newlines


SYSTEM = Caller(credential_id=None, role=TokenRole.ADMIN, label="system")
