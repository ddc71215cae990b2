"""Mail as threads: the newest conversations (filtered by agent, importance, acknowledgements still
owed) and one conversation with its messages and each recipient's read and acknowledged state.

Bodies are shown to tokens that may do `message.oversee` (coordinator, admin); the others see the
rest (see docs/dashboard.md#mail)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from vibe_ensemble.api.web.login import Visit, serve
from vibe_ensemble.api.web.pages import Context, live_fragment, live_page
from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.rules import MAX_LINE

router = APIRouter(include_in_schema=False)

FAMILIES = ("message.*",)
THREADS = 50

ProjectQuery = Annotated[str | None, Query(max_length=64)]
Text = Annotated[str, Query(max_length=64)]


def _importance(value: str) -> Importance | None:
    if not value:
        return None
    try:
        return Importance(value)
    except ValueError:
        choices = ", ".join(i.value for i in Importance)
        raise InvalidInput("importance", f"must be one of {choices}") from None


def _threads(agent: str, importance: str, unacked: str) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        found = await visit.services.threads.threads(
            visit.caller,
            project=project,
            agent=agent or None,
            importance=_importance(importance),
            unacked=bool(unacked),
            limit=THREADS,
        )
        filters = {"agent": agent, "importance": importance, "unacked": unacked}
        return {"threads": found, "filters": filters, "importances": list(Importance), "cap": THREADS}

    return context


@router.get("/mail")
async def mail_page(
    request: Request,
    project: ProjectQuery = None,
    agent: Text = "",
    importance: Text = "",
    unacked: Text = "",
) -> Response:
    """The newest threads: subject, participants, last activity, acknowledgements owed."""
    query = {k: v for k, v in (("agent", agent), ("importance", importance), ("unacked", unacked)) if v}
    context = _threads(agent, importance, unacked)
    return await serve(
        request,
        "page",
        lambda visit: live_page(visit, project, "mail.html", "/fragments/mail", FAMILIES, context, query),
    )


@router.get("/fragments/mail")
async def mail_fragment(
    request: Request,
    project: ProjectQuery = None,
    agent: Text = "",
    importance: Text = "",
    unacked: Text = "",
) -> Response:
    context = _threads(agent, importance, unacked)
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_mail.html", context)
    )


def _thread(thread_id: str) -> Context:
    async def context(visit: Visit, project: str) -> dict[str, Any]:
        return {"thread": await visit.services.threads.thread(visit.caller, thread_id, project=project)}

    return context


ThreadQuery = Annotated[str, Query(min_length=1, max_length=MAX_LINE)]


@router.get("/mail/thread")
async def thread_page(request: Request, thread: ThreadQuery, project: ProjectQuery = None) -> Response:
    """One conversation: its messages oldest first, who has read and acknowledged each."""
    context = _thread(thread)
    return await serve(
        request,
        "page",
        lambda visit: live_page(
            visit, project, "thread.html", "/fragments/mail/thread", FAMILIES, context, {"thread": thread}
        ),
    )


@router.get("/fragments/mail/thread")
async def thread_fragment(request: Request, thread: ThreadQuery, project: ProjectQuery = None) -> Response:
    context = _thread(thread)
    return await serve(
        request, "fragment", lambda visit: live_fragment(visit, project, "_thread.html", context)
    )
