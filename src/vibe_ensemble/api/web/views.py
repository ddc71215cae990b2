"""The dashboard's board and issue pages, an overseer's message, retiring an agent.

The board's "Needs attention" panel has its own modules: `attention` (what it renders) and
`attention_views` (its live fragment and its release action)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from vibe_ensemble.api.web import agents, attention, attention_views, insight, knowledge, leases, login, mail
from vibe_ensemble.api.web import session as sessions
from vibe_ensemble.api.web.login import Visit, form_text, serve
from vibe_ensemble.api.web.pages import frame
from vibe_ensemble.api.web.render import (
    BOARD_FAMILIES,
    COLUMN_CAP,
    COLUMNS,
    HERE,
    RECENT_EVENTS,
    live,
    templates,
)
from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.errors import (
    InvalidInput,
)
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.ops.config import Settings

router = APIRouter(include_in_schema=False)


NOTICES = {"sent": "Message sent.", "retired": "Agent retired.", "released": "Agent's work released."}


ProjectQuery = Annotated[str | None, Query(max_length=64)]


IssueId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


async def _board(visit: Visit, project: str | None) -> dict[str, Any]:
    services, caller = visit.services, visit.caller
    board = await services.dashboard.board(caller, project=project, per_column=COLUMN_CAP)
    recent = await services.events.recent(caller, project=board.project, limit=RECENT_EVENTS)
    return {
        "board": board,
        "columns": board.columns,
        "counts": board.counts,
        "column_names": COLUMNS,
        "column_cap": COLUMN_CAP,
        "recent": recent,
        "may_retire": visit.may(Op.AGENT_RETIRE),
        "csrf": visit.csrf,
        "csrf_field": sessions.CSRF_FIELD,
    }


async def _board_page(
    visit: Visit, project: str | None, *, form: dict[str, str] | None = None, form_error: str = ""
) -> Response:
    after = await visit.services.events.latest_id()  # before reading: whatever follows is delivered
    around = await frame(visit, project)
    slug = around["project"].slug
    context = {
        **around,
        **await _board(visit, slug),
        **await attention.context(visit, slug),
        "attention_live": live(attention.FRAGMENT, slug, after, attention.FAMILIES),
        "live": live("/fragments/board", slug, after, BOARD_FAMILIES),
        "may_send": visit.may(Op.MESSAGE_SEND),
        "roles": list(AgentRole),
        "importances": list(Importance),
        "form": form or {"to": "", "subject": "", "body": "", "importance": Importance.NORMAL.value},
        "form_error": form_error,
        "notice": NOTICES.get(visit.request.query_params.get("done", ""), ""),
    }
    status = 422 if form_error else 200
    return templates().TemplateResponse(visit.request, "board.html", context, status_code=status)


@router.get("/")
async def board_page(request: Request, project: ProjectQuery = None) -> Response:
    """The board: the team, issues by status, live leases, recent events."""
    return await serve(request, "page", lambda visit: _board_page(visit, project))


@router.get("/fragments/board")
async def board_fragment(request: Request, project: ProjectQuery = None) -> Response:
    async def build(visit: Visit) -> Response:
        context = {"project": await visit.services.projects.get(visit.caller, project)}
        context.update(await _board(visit, context["project"].slug))
        return templates().TemplateResponse(request, "_board.html", context)

    return await serve(request, "fragment", build)


async def _issue(visit: Visit, issue_id: int, project: str) -> dict[str, Any]:
    return {"detail": await visit.services.issues.get(visit.caller, issue_id, project=project)}


@router.get("/issues/{issue_id}")
async def issue_page(request: Request, issue_id: IssueId, project: ProjectQuery = None) -> Response:
    """One issue with its comments, dependencies and dependants."""

    async def build(visit: Visit) -> Response:
        after = await visit.services.events.latest_id()
        around = await frame(visit, project)
        slug = around["project"].slug
        context = {
            **around,
            **await _issue(visit, issue_id, slug),
            "live": live(f"/fragments/issues/{issue_id}", slug, after, ("issue.*",)),
        }
        return templates().TemplateResponse(request, "issue.html", context)

    return await serve(request, "page", build)


@router.get("/fragments/issues/{issue_id}")
async def issue_fragment(request: Request, issue_id: IssueId, project: ProjectQuery = None) -> Response:
    async def build(visit: Visit) -> Response:
        current = await visit.services.projects.get(visit.caller, project)
        context = {"project": current, **await _issue(visit, issue_id, current.slug)}
        return templates().TemplateResponse(request, "_issue.html", context)

    return await serve(request, "fragment", build)


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
        project = form_text(form, "project") or None
        values = {k: form_text(form, k) for k in ("to", "subject", "body", "importance")}
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

    return await serve(request, "action", build)


@router.post("/agents/{name}/retire")
async def retire_agent(request: Request, name: Annotated[str, PathParam(max_length=64)]) -> Response:
    """Retire an agent: its leases are released and its work goes back to the pool."""

    async def build(visit: Visit) -> Response:
        form = await request.form()
        project = form_text(form, "project") or None
        await visit.services.agents.retire(
            visit.caller, name=name, project=project, reason="retired from the dashboard"
        )
        return RedirectResponse(f"/?{urlencode({'project': project or '', 'done': 'retired'})}", 303)

    return await serve(request, "action", build)


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at `/` and its files at `/static`, with this process's session key."""
    app.state.session_key = sessions.session_key(settings)
    app.include_router(router)
    app.include_router(login.router)
    app.include_router(attention_views.router)
    app.include_router(leases.router)
    app.include_router(mail.router)
    app.include_router(agents.router)
    app.include_router(insight.router)
    app.include_router(knowledge.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
