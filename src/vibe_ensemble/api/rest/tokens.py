"""REST routes for API tokens (admin). Thin calls into the services."""

from __future__ import annotations

from fastapi import APIRouter, status

from vibe_ensemble.api.gate import GatedRoute
from vibe_ensemble.api.rest.deps import CallerDep, IdPath, ServicesDep
from vibe_ensemble.api.rest.schemas import (
    TokenIn,
    TokenOut,
)
from vibe_ensemble.domain.models import (
    Credential,
)

router = APIRouter(prefix="/api/v1", route_class=GatedRoute)


@router.get("/tokens", tags=["tokens"])
async def list_tokens(caller: CallerDep, services: ServicesDep) -> list[Credential]:
    return await services.tokens.list(caller)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
async def create_token(body: TokenIn, caller: CallerDep, services: ServicesDep) -> TokenOut:
    cred, secret = await services.tokens.create(caller, **body.model_dump())
    return TokenOut(
        token=secret,
        id=cred.id,
        prefix=cred.prefix,
        role=cred.role,
        project=cred.project,
        agent=cred.agent,
        tool_profile=cred.tool_profile,
    )


@router.delete("/tokens/{token_id}", tags=["tokens"])
async def revoke_token(token_id: IdPath, caller: CallerDep, services: ServicesDep) -> Credential:
    return await services.tokens.revoke(caller, token_id)
