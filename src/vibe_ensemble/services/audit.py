"""The audit log: who did what security-relevant thing, when, from where; read by admins.

Changes that are audited (token changes, admin actions) write their entry in
their own transaction (`Transaction.audit`). The front doors record what they
refuse through `denied`; authentication failures are recorded by
`TokenService.authenticate`. Entries never hold a token: every value is redacted.
"""

from __future__ import annotations

from datetime import datetime

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.models import AuditPage
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import audit as store

MAX_AUDIT_PAGE = 1000
OUTCOMES = ("ok", "denied", "failed")  # every entry's outcome is one of these (docs/security.md)


class AuditService(Service):
    async def record(self, caller: Caller, action: str, outcome: str = "ok", **details: object) -> None:
        """Record an act of `caller` in its own transaction."""
        async with self.write() as tx:
            tx.audit(caller, action, outcome, **details)

    async def denied(self, caller: Caller, exc: PermissionDenied) -> None:
        """Record a refusal: a role that lacks the operation, another project, another agent."""
        await self.record(caller, "access.denied", "denied", message=exc.message, **exc.details)

    async def page(
        self,
        caller: Caller,
        *,
        before: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> AuditPage:
        """Entries newest first; page back with `before=next_before`."""
        caller.require(Op.AUDIT_READ)
        limit = rules.limit("limit", limit, maximum=MAX_AUDIT_PAGE)
        if before is not None and before < 1:
            raise InvalidInput("before", "must be an audit entry id (1 or more)")
        for field, value in (("action", action), ("actor", actor)):
            if value is not None:
                rules.text(field, value, max_len=rules.MAX_LINE)
        if outcome is not None and outcome not in OUTCOMES:
            raise InvalidInput("outcome", f"must be one of {', '.join(OUTCOMES)} (got {outcome[:16]!r})")
        if since is not None:
            since = rules.moment("since", since)
        async with self.snapshot() as conn:
            items = await store.page(
                conn,
                before=before,
                action=action,
                actor=actor,
                outcome=outcome,
                since=since,
                limit=limit + 1,
            )
        more = len(items) > limit
        items = items[:limit]
        return AuditPage(items=items, next_before=items[-1].id if more else None)
