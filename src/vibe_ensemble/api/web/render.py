"""How the dashboard looks: the Jinja environment and filters, event summaries, page helpers."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import Response

from vibe_ensemble.domain.events import EventFamily, EventType, family_of
from vibe_ensemble.domain.models import Event
from vibe_ensemble.domain.untrusted import marked_visibly

if TYPE_CHECKING:
    import jinja2
    from starlette.templating import Jinja2Templates

HERE = Path(__file__).parent


RECENT_EVENTS = 15


COLUMN_CAP = 30  # cards shown per board column; the column's count says how many there are


# Every event type the services emit: a browser's EventSource needs the exact names to listen to.
EVENT_TYPES = tuple(t.value for t in EventType)


BOARD_FAMILIES = ("agent.*", "issue.*", "message.sent", "reservation.*", "knowledge.*")


COLUMNS = (
    ("ready", "Ready"),
    ("in_progress", "In progress"),
    ("review", "Review"),
    ("blocked", "Blocked"),
    ("done", "Done"),
)


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


def until(value: datetime) -> str:
    """How far in the future `value` is, for people ("in 4 min")."""
    seconds = int((value - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "now"
    return f"in {span(timedelta(seconds=seconds))}"


def span(value: timedelta) -> str:
    """A duration for people: "45 s", "10 min", "2 h"."""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def marked(snippet: str) -> list[tuple[str, bool]]:
    """A search snippet as (text, matched) pieces: the words between « and » are the matches. The
    template escapes every piece and wraps the matched ones in <mark>: nothing is marked safe."""
    pieces: list[tuple[str, bool]] = []
    rest = snippet
    while "«" in rest:
        before, _, after = rest.partition("«")
        match, found, rest = after.partition("»")
        if before:
            pieces.append((before, False))
        if not found:  # an unclosed mark: the rest is plain text
            pieces.append(("«" + match, False))
            return pieces
        pieces.append((match, True))
    if rest:
        pieces.append((rest, False))
    return pieces


def shown(value: Any) -> Any:
    """What a template prints: agent text with the characters that hide or reorder text made
    visible (`⟦U+202E⟧`, `⟦U+E0041⟧`: domain/untrusted.py); the templates' own markup and anything
    not text, as it is."""
    if type(value) is not str:
        return value
    return marked_visibly(value)


def _environment() -> jinja2.Environment:
    import jinja2  # here: the first page loads Jinja, not the server's start

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # agent content is untrusted: escape everything, never mark it safe
        finalize=shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _ago
    env.filters["when"] = _when
    env.filters["summary"] = describe
    env.filters["label"] = lambda value: str(value).replace("_", " ")
    env.filters["until"] = until
    env.filters["span"] = span
    env.filters["marked"] = marked
    return env


def describe(event: Event) -> str:
    """A one-line, plain-text summary of an event for people."""
    p = event.payload
    family = family_of(event.type)
    if family == EventFamily.ISSUE:
        return f"#{p.get('id')} {p.get('title') or ''}".strip()
    if family == EventFamily.AGENT:
        extra = p.get("status") or p.get("role") or p.get("reason") or p.get("activity") or ""
        return f"{p.get('agent', '')} {extra}".strip()
    if event.type == EventType.MESSAGE_SENT:
        recipients = ", ".join(str(r) for r in p.get("recipients") or []) or "nobody"
        return f"“{p.get('subject', '')}” to {recipients}"
    if family == EventFamily.RESERVATION:
        return f"{p.get('agent', '')}: {', '.join(str(x) for x in p.get('patterns') or p.get('paths') or [])}"
    if family == EventFamily.KNOWLEDGE:
        return f"#{p.get('id')} {p.get('title') or ''}".strip()
    return ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, str | int) and k != "thread_id")


@functools.cache
def templates() -> Jinja2Templates:
    """The dashboard's templates, made by the first page that is rendered (not at start-up)."""
    from starlette.templating import Jinja2Templates

    return Jinja2Templates(env=_environment())


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, status: int, code: str, message: str) -> Response:
    context = {"status": status, "code": code, "message": message}
    return no_store(templates().TemplateResponse(request, "error.html", context, status_code=status))


def live(
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
