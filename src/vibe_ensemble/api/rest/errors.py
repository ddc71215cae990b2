"""Every REST error is JSON: {"error": {"code", "message", "details"}}, never a stack trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from vibe_ensemble.api import auth
from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied, VibeError

log = structlog.get_logger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `permission_denied`.")
    message: str = Field(description="What went wrong, for a person or an agent to act on.")
    details: dict[str, Any] = Field(description="The field and rule, the conflicting holder, …")


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request could not be read."),
    401: _error("Missing, invalid, expired or revoked token."),
    403: _error("The token's role, project scope or bound agent does not allow this."),
    404: _error("No such project, agent, issue, … (or not visible to this token)."),
    409: _error("Conflict: already claimed, stale version, already exists."),
    413: _error("The request body is larger than the server accepts."),
    421: _error("`misdirected_request`: the Host is not one this server answers (VIBE_ALLOWED_HOSTS)."),
    422: _error(
        "Invalid input: `details` names the first problem (`field`, `rule`) and lists every one "
        "(`errors`: `{field, rule}` each)."
    ),
    429: _error("Rate limit reached for this credential.", headers=_RETRY_AFTER),
    503: _error("`database_unavailable`: the database cannot be reached; retry.", headers=_RETRY_AFTER),
    507: _error("`storage_full`: the database's disk is full; reads work, writes are refused."),
}
"""The error answers every REST route may give, in the OpenAPI document."""


def _listed(details: Mapping[str, Any]) -> dict[str, Any]:
    """An `invalid_input` answer's details in the one shape every refusal has: the first problem
    (`field`, `rule`), whatever else the refusal says, and every problem (`errors`, a list of
    `{field, rule}`). A schema's refusal lists each problem; any other names one, listed alone."""
    if "errors" in details or "field" not in details:
        return dict(details)
    return {**details, "errors": [{"field": details["field"], "rule": details.get("rule", "invalid")}]}


def _field(loc: tuple[Any, ...]) -> str:
    """The field a validation error is about: its location without the leading kind (body, query, …).

    Only the first part is the kind: a query parameter may itself be named `query`."""
    parts = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
    return rules.field_path(parts) or "body"


def _describe(error: Any, route: object) -> dict[str, str]:
    """One validation error as field and rule; a body that is not JSON at all is the field `body`.
    A field the body does not take is named with the fields it does take; a check of ours reads as
    itself, without the validation library's "Value error, " before it."""
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", "cannot be parsed")
        return {"field": "body", "rule": f"invalid JSON at character {error['loc'][-1]}: {reason}"}
    rule = str(error["msg"]).removeprefix("Value error, ")
    ctx = error.get("ctx", {})
    if error["type"] in ("too_long", "string_too_long") and "max_length" in ctx:  # as the MCP door says it
        unit = "characters" if error["type"] == "string_too_long" else "items"
        got = len(error["input"]) if isinstance(error.get("input"), str | list) else ctx.get("actual_length")
        rule = f"must be at most {ctx['max_length']} {unit}" + (f" (got {got})" if got is not None else "")
    if error["type"] == "extra_forbidden" and error["loc"][:1] == ("body",):
        rule = f"not a field of this request's body; it takes: {', '.join(_body_fields(route)) or 'none'}"
    return {"field": _field(tuple(error["loc"])), "rule": rule}


def _body_fields(route: object) -> list[str]:
    """The fields a route's JSON body takes, by the names clients send (none when it takes no model)."""
    body = route.body_field if isinstance(route, APIRoute) else None
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _unreadable(cause: BaseException) -> str:
    """Why a body that parses as no JSON value at all was refused (malformed JSON has its own)."""
    if isinstance(cause, UnicodeDecodeError):
        return "must be JSON in UTF-8"
    if isinstance(cause, RecursionError):
        return "is nested too deeply to read"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "holds a number with too many digits"
    return "could not be read as JSON"


def _json(request: Request) -> bool:
    """Whether the body was read as JSON: sent as `application/json` or a `+json` type, or with no
    Content-Type at all (FastAPI reads such a body as JSON too)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind in ("", "application/json") or (kind.startswith("application/") and kind.endswith("+json"))


def install(app: FastAPI) -> None:
    @app.exception_handler(VibeError)
    async def _vibe(request: Request, exc: VibeError) -> JSONResponse:
        caller = getattr(request.state, "caller", None)
        if isinstance(exc, PermissionDenied) and isinstance(caller, Caller):
            await auth.audit_denied(request.app.state.services, caller, exc)
        if exc.code == InvalidInput.code:  # a service's refusal, shaped as the schema's are
            return JSONResponse(auth.error_body(exc.code, exc.message, _listed(exc.details)), exc.http_status)
        return auth.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [_describe(e, request.scope.get("route")) for e in exc.errors()]
        if any(e["loc"][:1] == ("body",) for e in exc.errors()) and not _json(request):
            errors = [{"field": "body", "rule": rules.JSON_BODY_RULE}]  # what was sent was never read as JSON
        first = errors[0] if errors else {"field": "body", "rule": "invalid"}
        message = f"{first['field']}: {first['rule']}"
        if not request.url.path.startswith(("/api/", "/mcp")):  # a dashboard page or fragment
            from vibe_ensemble.api.web.render import error_page  # Jinja: only when a page needs it

            return error_page(request, 422, "invalid_input", message)
        # The first problem as every refusal names it (`field`, `rule`), and all of them (`errors`)
        details = {**first, "errors": errors}
        return JSONResponse(auth.error_body("invalid_input", message, details), 422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404 and _near_mcp(request.url.path):
            return _mcp_is_elsewhere(request)
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the body
            rule = _unreadable(exc.__cause__)
            details = _listed({"field": "body", "rule": rule})
            return JSONResponse(auth.error_body("invalid_input", f"body: {rule}", details), 422)
        code = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthenticated",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return JSONResponse(auth.error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        # The server closes the connection after an unhandled error: say so, so the client's next
        # request goes on a new connection instead of meeting a reset.
        return JSONResponse(
            auth.error_body("internal", "internal server error"), 500, headers={"Connection": "close"}
        )


MCP_HERE = "no MCP endpoint at this path: the MCP URL ends in /mcp, with no trailing slash"


def _near_mcp(path: str) -> bool:
    """A path an MCP client was likely given by mistake: `/mcp/`, `/api/v1/mcp`, `/x/mcp`."""
    return path != "/mcp" and path.rstrip("/").endswith("/mcp")


def _mcp_is_elsewhere(request: Request) -> JSONResponse:
    """404 as a JSON-RPC error, which an MCP client shows (it showed "Not Found", saying nothing of
    where the endpoint is), with this server's MCP URL as the client reached it."""
    message = f"{MCP_HERE} (here: {str(request.base_url).rstrip('/')}/mcp)"
    return JSONResponse(auth.jsonrpc_error_body("not_found", message), 404)
