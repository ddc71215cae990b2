"""The dashboard: server-rendered pages over the services, kept live by `static/dashboard.js`.

Each page is a shell around a fragment (`/fragments/…`) that the script re-fetches when the event
feed reports a change, and swaps in. Views are thin: they authenticate (session cookie, or a bearer
token for scripts), call one or two services — which authorise, as for every door — and render.
Everything agents wrote is untrusted text: templates autoescape, and nothing is marked safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.errors import (
    InvalidInput,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    VibeError,
)
from vibe_ensemble.domain.models import Event
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.services import Services
from vibe_ensemble.services.briefings import Board, Card

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).parent
RECENT_EVENTS = 15
MAIL_EVENTS = 100

# Every event type the services emit: a browser's EventSource needs the exact names to listen to.
EVENT_TYPES = (
    "project.created",
    "agent.registered",
    "agent.status",
    "agent.retired",
    "issue.created",
    "issue.updated",
    "issue.claimed",
    "issue.commented",
    "issue.closed",
    "issue.ready",
    "message.sent",
    "message.read",
    "message.acknowledged",
    "reservation.granted",
    "reservation.released",
    "knowledge.added",
    "knowledge.updated",
    "token.created",
    "token.revoked",
)
BOARD_FAMILIES = ("agent.*", "issue.*", "message.sent", "reservation.*", "knowledge.*")
COLUMNS = (
    ("ready", "Ready"),
    ("in_progress", "In progress"),
    ("review", "Review"),
    ("blocked", "Blocked"),
    ("done", "Done"),
)
NOTICES = {"sent": "Message sent.", "retired": "Agent retired."}

ProjectQuery = Annotated[str | None, Query(max_length=64)]
IssueId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # agent content is untrusted: escape everything, never mark it safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["summary"] = describe
    env.filters["label"] = lambda value: str(value).replace("_", " ")
    return env


def describe(event: Event) -> str:
    """A one-line, plain-text summary of an event for people."""
    p = event.payload
    family = event.type.split(".", 1)[0]
    if family == "issue":
        return f"#{p.get('id')} {p.get('title') or ''}".strip()
    if family == "agent":
        extra = p.get("status") or p.get("role") or p.get("reason") or ""
        return f"{p.get('agent', '')} {extra}".strip()
    if event.type == "message.sent":
        recipients = ", ".join(str(r) for r in p.get("recipients") or []) or "nobody"
        return f"“{p.get('subject', '')}” to {recipients}"
    if family == "reservation":
        return f"{p.get('agent', '')}: {', '.join(str(x) for x in p.get('patterns') or [])}"
    if family == "knowledge":
        return f"#{p.get('id')} {p.get('title') or ''}".strip()
    return ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, str | int) and k != "thread_id")


templates = Jinja2Templates(env=_environment())


# --- who is asking -----------------------------------------------------------------


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


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _visit(request: Request) -> Visit | None:
    """The caller: a bearer token wins; else the session cookie; None when there is neither."""
    services = _services(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        caller = await services.tokens.authenticate(token.strip(), remote=sessions.remote(request))
        request.state.caller = caller  # the REST error handler audits denials of this caller
        return Visit(request, services, caller, None)
    found = sessions.from_request(request)
    if found is None:
        return None
    try:
        caller = await sessions.authenticate(services, request, found)
    except Unauthenticated:
        return None  # the token was revoked or expired: the session is over
    return Visit(request, services, caller, found)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_login(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if request.cookies.get(sessions.COOKIE):
        sessions.clear_cookie(response, request)
    return response


def _error_page(request: Request, status: int, code: str, message: str) -> Response:
    context = {"status": status, "code": code, "message": message}
    return _no_store(templates.TemplateResponse(request, "error.html", context, status_code=status))


async def _serve(request: Request, kind: str, build: Callable[[Visit], Awaitable[Response]]) -> Response:
    """Authenticate, build the answer, and turn domain errors into pages (or, for scripts, JSON)."""
    try:
        visit = await _visit(request)
    except RateLimited as exc:
        if request.headers.get("authorization"):
            raise
        return _error_page(request, 429, exc.code, exc.message)
    if visit is None:
        if kind == "page":
            return _to_login(request)
        return _no_store(Response("log in again", status_code=401, media_type="text/plain"))
    if kind == "action":
        refused = _forged(request, visit, await request.form())
        if refused is not None:
            return refused
    try:
        return _no_store(await build(visit))
    except VibeError as exc:
        if visit.session is None:
            raise  # a script: the REST error shape (and audit) from the app's error handler
        if isinstance(exc, PermissionDenied):
            await visit.services.audit.denied(visit.caller, exc)
        return _error_page(request, exc.http_status, exc.code, exc.message)


def _forged(request: Request, visit: Visit, form: Any) -> Response | None:
    """A POST from a session must carry its CSRF token and, when the browser says, our origin."""
    if visit.session is None:
        return None  # a bearer token is not sent by browsers on their own: nothing to forge
    if not _same_origin(request):
        return _error_page(request, 403, "csrf_failed", "the form was sent from another site")
    given = form.get(sessions.CSRF_FIELD)
    key = sessions.key_of(request)
    if not isinstance(given, str) or not sessions.csrf_ok(key, visit.session, given):
        return _error_page(request, 403, "csrf_failed", "the form is missing its CSRF token: reload the page")
    return None


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Fetch metadata, else Origin).

    With `Referrer-Policy: no-referrer` browsers send `Origin: null` on forms, which says nothing.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return origin.partition("://")[2] == request.headers.get("host", "")


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# --- pages -------------------------------------------------------------------------


def _live(
    path: str, project: str, after: int, families: tuple[str, ...], extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """What the script needs to follow a page: its fragment, the feed, the event names."""
    query = urlencode({"project": project, **(extra or {})})
    stream = urlencode([("project", project), ("after", after), *(("types", f) for f in families)])
    return {
        "fragment": f"{path}?{query}",
        "stream": f"/api/v1/events/stream?{stream}",
        "events": " ".join(EVENT_TYPES),
    }


async def _frame(visit: Visit, project: str | None) -> dict[str, Any]:
    """What every page shows around its content: the project selector, who is logged in."""
    services, caller = visit.services, visit.caller
    current = await services.projects.get(caller, project)
    return {
        "project": current,
        "projects": await services.projects.list(caller),
        "caller": caller,
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
    }


def _columns(board: Board) -> dict[str, list[Card]]:
    """The board's columns for people: open issues are ready, or blocked waiting on others."""
    opened = board.columns.get("open", [])
    return {
        "ready": [c for c in opened if c.ready],
        "in_progress": board.columns.get("in_progress", []),
        "review": board.columns.get("review", []),
        "blocked": board.columns.get("blocked", []) + [c for c in opened if not c.ready],
        "done": board.columns.get("done", []) + board.columns.get("closed", []),
    }


async def _board(visit: Visit, project: str | None) -> dict[str, Any]:
    services, caller = visit.services, visit.caller
    board = await services.briefings.board(caller, project=project)
    recent = await services.events.recent(caller, project=board.project, limit=RECENT_EVENTS)
    return {
        "board": board,
        "columns": _columns(board),
        "column_names": COLUMNS,
        "recent": recent,
        "may_retire": visit.may(Op.AGENT_RETIRE),
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
    }


async def _board_page(
    visit: Visit, project: str | None, *, form: dict[str, str] | None = None, form_error: str = ""
) -> Response:
    after = await visit.services.events.latest_id()  # before reading: whatever follows is delivered
    frame = await _frame(visit, project)
    slug = frame["project"].slug
    context = {
        **frame,
        **await _board(visit, slug),
        "live": _live("/fragments/board", slug, after, BOARD_FAMILIES),
        "may_send": visit.may(Op.MESSAGE_SEND),
        "roles": list(AgentRole),
        "importances": list(Importance),
        "form": form or {"to": "", "subject": "", "body": "", "importance": Importance.NORMAL.value},
        "form_error": form_error,
        "notice": NOTICES.get(visit.request.query_params.get("done", ""), ""),
    }
    status = 422 if form_error else 200
    return templates.TemplateResponse(visit.request, "board.html", context, status_code=status)


@router.get("/")
async def board_page(request: Request, project: ProjectQuery = None) -> Response:
    """The board: the team, issues by status, live leases, recent events."""
    return await _serve(request, "page", lambda visit: _board_page(visit, project))


@router.get("/fragments/board")
async def board_fragment(request: Request, project: ProjectQuery = None) -> Response:
    async def build(visit: Visit) -> Response:
        context = {"project": await visit.services.projects.get(visit.caller, project)}
        context.update(await _board(visit, context["project"].slug))
        return templates.TemplateResponse(request, "_board.html", context)

    return await _serve(request, "fragment", build)


async def _issue(visit: Visit, issue_id: int, project: str) -> dict[str, Any]:
    return {"detail": await visit.services.issues.get(visit.caller, issue_id, project=project)}


@router.get("/issues/{issue_id}")
async def issue_page(request: Request, issue_id: IssueId, project: ProjectQuery = None) -> Response:
    """One issue with its comments, dependencies and dependants."""

    async def build(visit: Visit) -> Response:
        after = await visit.services.events.latest_id()
        frame = await _frame(visit, project)
        slug = frame["project"].slug
        context = {
            **frame,
            **await _issue(visit, issue_id, slug),
            "live": _live(f"/fragments/issues/{issue_id}", slug, after, ("issue.*",)),
        }
        return templates.TemplateResponse(request, "issue.html", context)

    return await _serve(request, "page", build)


@router.get("/fragments/issues/{issue_id}")
async def issue_fragment(request: Request, issue_id: IssueId, project: ProjectQuery = None) -> Response:
    async def build(visit: Visit) -> Response:
        current = await visit.services.projects.get(visit.caller, project)
        context = {"project": current, **await _issue(visit, issue_id, current.slug)}
        return templates.TemplateResponse(request, "_issue.html", context)

    return await _serve(request, "fragment", build)


async def _mail(visit: Visit, project: str) -> dict[str, Any]:
    sent = await visit.services.events.recent(
        visit.caller, project=project, types=["message.sent"], limit=MAIL_EVENTS
    )
    return {"sent": sent}


@router.get("/mail")
async def mail_page(request: Request, project: ProjectQuery = None) -> Response:
    """Who wrote to whom: the `message.sent` events (subjects, never bodies)."""

    async def build(visit: Visit) -> Response:
        after = await visit.services.events.latest_id()
        frame = await _frame(visit, project)
        slug = frame["project"].slug
        context = {
            **frame,
            **await _mail(visit, slug),
            "live": _live("/fragments/mail", slug, after, ("message.sent",)),
        }
        return templates.TemplateResponse(request, "mail.html", context)

    return await _serve(request, "page", build)


@router.get("/fragments/mail")
async def mail_fragment(request: Request, project: ProjectQuery = None) -> Response:
    async def build(visit: Visit) -> Response:
        current = await visit.services.projects.get(visit.caller, project)
        context = {"project": current, **await _mail(visit, current.slug)}
        return templates.TemplateResponse(request, "_mail.html", context)

    return await _serve(request, "fragment", build)


# --- steering ----------------------------------------------------------------------


def _recipients(target: str) -> dict[str, Any]:
    """The form's one "to" choice: `agent:NAME`, `role:ROLE` or `all`."""
    kind, _, value = target.partition(":")
    if target == "all":
        return {"broadcast": True}
    if kind == "agent" and value:
        return {"to": [value]}
    if kind == "role":
        try:
            return {"to_role": AgentRole(value)}
        except ValueError:
            raise InvalidInput("to", f"no such role {value!r}") from None
    return {"to": []}  # the service names the rule: at least one recipient


def _importance(value: str) -> Importance:
    try:
        return Importance(value or Importance.NORMAL.value)
    except ValueError:
        choices = ", ".join(i.value for i in Importance)
        raise InvalidInput("importance", f"must be one of {choices}") from None


@router.post("/messages")
async def send_message(request: Request) -> Response:
    """Send an overseer message as the logged-in token; it is also written to the audit log."""

    async def build(visit: Visit) -> Response:
        form = await request.form()
        project = _text(form, "project") or None
        values = {k: _text(form, k) for k in ("to", "subject", "body", "importance")}
        try:
            await visit.services.messages.send(
                visit.caller,
                project=project,
                subject=values["subject"],
                body=values["body"],
                importance=_importance(values["importance"]),
                overseer=True,
                **_recipients(values["to"]),
            )
        except InvalidInput as exc:
            if visit.session is None:
                raise
            return await _board_page(visit, project, form=values, form_error=exc.message)
        return RedirectResponse(f"/?{urlencode({'project': project or '', 'done': 'sent'})}", 303)

    return await _serve(request, "action", build)


@router.post("/agents/{name}/retire")
async def retire_agent(request: Request, name: Annotated[str, PathParam(max_length=64)]) -> Response:
    """Retire an agent: its leases are released and its work goes back to the pool."""

    async def build(visit: Visit) -> Response:
        form = await request.form()
        project = _text(form, "project") or None
        await visit.services.agents.retire(
            visit.caller, name=name, project=project, reason="retired from the dashboard"
        )
        return RedirectResponse(f"/?{urlencode({'project': project or '', 'done': 'retired'})}", 303)

    return await _serve(request, "action", build)


# --- logging in and out ------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str = "") -> Response:
    response = templates.TemplateResponse(request, "login.html", {"error": error}, status_code=status)
    return _no_store(response)


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await _visit_or_none(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


async def _visit_or_none(request: Request) -> Visit | None:
    try:
        return await _visit(request)
    except VibeError:
        return None


@router.post("/login")
async def login(request: Request) -> Response:
    """Check a pasted token and start a session; the cookie names the credential, never the token."""
    if not _same_origin(request):
        return _login_page(request, 403, "the form was sent from another site")
    token = _text(await request.form(), "token").strip()
    services = _services(request)
    try:
        caller = await services.tokens.authenticate(token, remote=sessions.remote(request))
    except RateLimited as exc:
        return _login_page(request, 429, exc.message)
    except Unauthenticated:
        return _login_page(request, 401, "That token is invalid, expired or revoked.")
    assert caller.credential_id is not None
    settings = request.app.state.runtime.settings
    started = sessions.issue(sessions.key_of(request), caller.credential_id, settings.session_ttl_s)
    response = RedirectResponse("/", status_code=303)
    sessions.set_cookie(response, request, started, settings.session_ttl_s)
    return _no_store(response)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session in this browser (the token stays valid: revoke it to cut every session)."""
    found = sessions.from_request(request)
    if found is not None:
        given = _text(await request.form(), sessions.CSRF_FIELD)
        if not _same_origin(request) or not sessions.csrf_ok(sessions.key_of(request), found, given):
            return _error_page(request, 403, "csrf_failed", "the form is missing its CSRF token")
    return _to_login(request)
