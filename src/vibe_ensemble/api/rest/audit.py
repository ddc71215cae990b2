"""REST route for the audit log (admin). Thin calls into the services."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, ServicesDep
from vibe_ensemble.domain.models import (
    AuditPage,
)
from vibe_ensemble.domain.rules import MAX_ID, MAX_LINE, MAX_NAME
from vibe_ensemble.services.audit import MAX_AUDIT_PAGE

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get("/audit", tags=["audit"])
async def list_audit(
    caller: CallerDep,
    services: ServicesDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Entries older than this id.")] = None,
    action: Annotated[
        str | None, Query(max_length=MAX_NAME, description="An action, or a family: `auth.*`.")
    ] = None,
    actor: Annotated[str | None, Query(max_length=MAX_LINE)] = None,
    outcome: Annotated[str | None, Query(max_length=16, description="ok, denied or failed.")] = None,
    since: Annotated[datetime | None, Query(description="Only entries at or after this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
) -> AuditPage:
    return await services.audit.page(
        caller, before=before, action=action, actor=actor, outcome=outcome, since=since, limit=limit
    )
