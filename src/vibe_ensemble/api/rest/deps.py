"""Request dependencies: the authenticated caller and the services."""

from __future__ import annotations

from typing import Annotated, get_args, get_origin

from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from vibe_ensemble.api import auth
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.rules import MAX_ID, MAX_NAME
from vibe_ensemble.services import Services

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer vibe_…`")


async def get_services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a plain `def` dependency on a worker thread, a thread hop
    that cost 11% of a REST call's CPU."""
    return services_of(request)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # documents the scheme
) -> Caller:
    """The bearer token's caller (`api.auth`); kept on the request for the denial audit. A query
    parameter the route does not take is refused (`known_query`)."""
    caller = (await auth.authenticate(services_of(request), request)).caller
    request.state.caller = caller
    if request.scope.get("query_string"):
        known_query(request)
    return caller


def known_query(request: Request) -> None:
    """A query parameter the route does not declare is bad input, not ignored: a misspelt filter
    (`?q=` for `?query=`) answered the whole unfiltered list as if it were the filtered one."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    accepted, repeatable = _accepted_query(route)
    unknown = sorted(set(request.query_params) - accepted)
    if unknown:
        listed = ", ".join(sorted(accepted)) or "none"
        raise InvalidInput(unknown[0][:64], f"not a query parameter of this endpoint; it takes: {listed}")
    # `?status=open&status=done` was read as the last one alone: an answer for half the question
    given = request.query_params
    if len(given.multi_items()) > len(given):  # some name given more than once
        for name in given:
            if name not in repeatable and len(given.getlist(name)) > 1:
                raise InvalidInput(name, "give this query parameter once")


def _accepted_query(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters the route and its dependencies declare (by the names clients send), and
    those of them that may be repeated (a list, such as `types`); listed once and kept on the route
    (routes compare by value: no cache can key on them)."""
    known: tuple[frozenset[str], frozenset[str]] | None = getattr(route, "vibe_query", None)
    if known is None:
        names: set[str] = set()
        lists: set[str] = set()
        dependants = [route.dependant]
        while dependants:
            dependant = dependants.pop()
            for param in dependant.query_params:
                names.add(param.alias)
                if _is_list(param.field_info.annotation):
                    lists.add(param.alias)
            dependants.extend(dependant.dependencies)
        known = (frozenset(names), frozenset(lists))
        route.vibe_query = known  # type: ignore[attr-defined]
    return known


def _is_list(annotation: object) -> bool:
    """`list[str]`, `list[str] | None`, `Annotated[list[str], …]`: a parameter given many times."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return origin is not None and any(_is_list(arg) for arg in get_args(annotation))


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ServicesDep = Annotated[Services, Depends(get_services)]


def digits(value: object) -> object:
    """A path's id as written: digits only, so `/issues/1.0` or `/issues/+1` names no issue (pydantic
    would read both as 1)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be an id: digits only")
    return value


IdPath = Annotated[int, Path(ge=1, le=MAX_ID), BeforeValidator(digits)]
P = "/projects/{project}"  # the prefix of every project's routes
ProjectPath = Annotated[str, Path(max_length=MAX_NAME, description="The project's slug.")]  # its `{project}`
