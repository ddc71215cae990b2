"""Who is asking the dashboard (bearer token or session), logging in and out, CSRF checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from vibe_ensemble.api import auth
from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.api.web.render import error_page, no_store, templates
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import (
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    VibeError,
)
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.services import Services

router = APIRouter(include_in_schema=False)


@dataclass
class Visit:
    """One authenticated dashboard request."""

    request: Request
    services: Services
    caller: Caller
    session: sessions.Session | None  # None: a script with a bearer token (no cookie, no CSRF)

    @property
    def csrf(self) -> str:
        if self.session is None:
            return ""
        return sessions.csrf_token(sessions.key_of(self.request), self.session)

    def may(self, op: Op) -> bool:
        """Whether to offer an action; the service still decides when it is used."""
        return allowed(self.caller.role, op)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def visit_of(request: Request) -> Visit | None:
    """The caller: a bearer token wins; else the session cookie; None when there is neither."""
    services = services_of(request)
    if auth.bearer_token(request.headers) is None and sessions.from_request(request) is None:
        return None
    try:
        found = await auth.authenticate(services, request, session=True)
    except Unauthenticated:
        if auth.bearer_token(request.headers) is not None:
            raise
        return None  # the token was revoked or expired: the session is over
    if found.session is None:
        request.state.caller = found.caller  # the REST error handler audits denials of this caller
    return Visit(request, services, found.caller, found.session)


def to_login(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if request.cookies.get(sessions.cookie_name(request)):
        sessions.clear_cookie(response, request)
    return response


async def serve(request: Request, kind: str, build: Callable[[Visit], Awaitable[Response]]) -> Response:
    """Authenticate, build the answer, and turn domain errors into pages (or, for scripts, JSON)."""
    try:
        visit = await visit_of(request)
    except RateLimited as exc:
        if request.headers.get("authorization"):
            raise
        return error_page(request, 429, exc.code, exc.message)
    if visit is None:
        if kind == "page":
            return to_login(request)
        return no_store(Response("log in again", status_code=401, media_type="text/plain"))
    if kind == "action":
        refused = _forged(request, visit, await request.form())
        if refused is not None:
            return refused
    try:
        return no_store(await build(visit))
    except VibeError as exc:
        if visit.session is None:
            raise  # a script: the REST error shape (and audit) from the app's error handler
        if isinstance(exc, PermissionDenied):
            await auth.audit_denied(visit.services, visit.caller, exc)
        return error_page(request, exc.http_status, exc.code, exc.message)


def _forged(request: Request, visit: Visit, form: Any) -> Response | None:
    """A POST from a session must carry its CSRF token and, when the browser says, our origin."""
    if visit.session is None:
        return None  # a bearer token is not sent by browsers on their own: nothing to forge
    if not sessions.same_origin(request):
        return error_page(request, 403, "csrf_failed", "the form was sent from another site")
    given = form.get(sessions.CSRF_FIELD)
    key = sessions.key_of(request)
    if not isinstance(given, str) or not sessions.csrf_ok(key, visit.session, given):
        return error_page(request, 403, "csrf_failed", "the form is missing its CSRF token: reload the page")
    return None


def form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _login_page(request: Request, status: int = 200, error: str = "") -> Response:
    response = templates().TemplateResponse(request, "login.html", {"error": error}, status_code=status)
    return no_store(response)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await _visit_or_none(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


async def _visit_or_none(request: Request) -> Visit | None:
    try:
        return await visit_of(request)
    except VibeError:
        return None


@router.post("/login")
async def login(request: Request) -> Response:
    """Check a pasted token and start a session; the cookie names the credential, never the token."""
    if not sessions.same_origin(request):
        return _login_page(request, 403, "the form was sent from another site")
    token = form_text(await request.form(), "token").strip()
    services = services_of(request)
    try:
        caller = await services.tokens.authenticate(token, remote=auth.remote(request))
    except RateLimited as exc:
        return _login_page(request, 429, exc.message)
    except Unauthenticated:
        return _login_page(request, 401, "That token is invalid, expired or revoked.")
    assert caller.credential_id is not None
    ttl_s = sessions.lifetime(request.app.state.runtime.settings.session_ttl_s, caller.expires_at)
    started = sessions.issue(sessions.key_of(request), caller.credential_id, ttl_s)
    response = RedirectResponse("/", status_code=303)
    sessions.set_cookie(response, request, started, ttl_s)
    return no_store(response)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session: the cookie is cleared in this browser and the session written down as ended,
    so a copy of the cookie is refused too, on every replica (the token stays valid: revoke it to
    end every session it started)."""
    found = sessions.from_request(request)
    if found is not None:
        given = form_text(await request.form(), sessions.CSRF_FIELD)
        if not sessions.same_origin(request) or not sessions.csrf_ok(sessions.key_of(request), found, given):
            return error_page(request, 403, "csrf_failed", "the form is missing its CSRF token")
        services = services_of(request)
        try:
            caller = await services.tokens.authenticate_session(
                found.credential_id, found.hash, remote=auth.remote(request), throttle=False
            )
        except Unauthenticated:
            return to_login(request)  # over already: its token revoked or expired, or logged out
        await services.tokens.end_session(caller, found.hash, found.expires_at)
    return to_login(request)
