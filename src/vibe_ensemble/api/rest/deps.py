"""Request dependencies: the authenticated caller and the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.services import Services

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer vibe_…`")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    remote = request.client.host if request.client else ""
    token = "" if credentials is None else credentials.credentials
    caller = await get_services(request).tokens.authenticate(token, remote=remote)
    request.state.caller = caller
    return caller


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ServicesDep = Annotated[Services, Depends(get_services)]
