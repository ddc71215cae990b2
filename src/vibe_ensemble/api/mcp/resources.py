"""Every `vibe://` resource: what each URI serves, and which URIs an event changes.

`resource_changes` is the other half of the same map: the notifier (`api.mcp.notifier`)
tells `subscriptions/listen` clients about the URIs an event touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated, ServerEvent
from mcp_types import Resource
from pydantic import TypeAdapter

from vibe_ensemble.api.mcp.context import acting, protocol_errors
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.events import EventFamily, EventType, family_of
from vibe_ensemble.domain.models import Event
from vibe_ensemble.domain.rules import MAX_ID

JSON_TYPE = "application/json"


def _json(value: Any) -> str:
    return TypeAdapter(type(value)).dump_json(value).decode()


_WHOLE = re.compile(r"[1-9][0-9]*")


def _positive(field: str, value: str, maximum: int = MAX_ID) -> int:
    """A URI parameter that must be a whole number from 1 to `maximum`, in ASCII digits without a
    leading zero: one number has one URI (`issues/01` and `issues/٣`, Arabic-Indic digits, read
    issue 1 and 3, where tools refuse them)."""
    if not _WHOLE.fullmatch(value) or not int(value) <= maximum:
        raise InvalidInput(
            field, f"must be a whole number from 1 to {maximum} (ASCII digits, no leading zero)"
        )
    return int(value)


ONCE_RULE = "a query parameter of a vibe:// URI is given at most once"


def query_problem(uri: str) -> tuple[str, str] | None:
    """What is wrong with a `vibe://` URI's query, as (problem, rule), or None: only vibe://projects
    takes one, `limit`, at most once (a parameter no resource takes, or given twice, was ignored
    without a word). The problem says the rule it breaks, the rule alone is the refusal's `rule`."""
    path, _, query = uri.partition("?")
    if not query:
        return None
    template = template_of(path)
    if template is None:
        return None  # no such resource: refused as one (server._read_resource)
    takes = sorted(_QUERIES.get(path, set()))
    names = [part.partition("=")[0] for part in query.split("&")]
    for name in names:
        if name not in takes:
            rule = f"{template} takes " + (
                f"only the query parameter {', '.join(takes)}" if takes else "no query"
            )
            return f"{rule} (got {name[:40]!r})", rule
    for name in names:
        if names.count(name) > 1:
            return f"{ONCE_RULE} (got {name[:40]!r} {names.count(name)} times)", ONCE_RULE
    return None


def template_of(path: str) -> str | None:
    """The URI template of the resource at `path` (a URI without its query; the template without its
    query too), or None."""
    for template, pattern in _PATTERNS.items():
        if pattern.fullmatch(path):
            return template
    return None


async def projects(limit: str = "500") -> str:
    services, caller = acting()
    return _json((await services.projects.list(caller))[: _positive("limit", limit, 500)])


async def project_overview(project: str) -> str:
    services, caller = acting()
    record = await services.projects.get(caller, project)
    board = await services.briefings.board(caller, project=project)
    summary = {
        "project": TypeAdapter(type(record)).dump_python(record, mode="json"),
        "issues": {status: len(cards) for status, cards in board.columns.items()},
        "active_agents": [a.name for a in board.agents],
        "leases": len(board.leases),
    }
    return json.dumps(summary, separators=(",", ":"))


async def board(project: str) -> str:
    services, caller = acting()
    return _json(await services.briefings.board(caller, project=project))


async def issue(project: str, id: str) -> str:
    services, caller = acting()
    return _json(await services.issues.get(caller, _positive("id", id), project=project))


async def ready(project: str) -> str:
    services, caller = acting()
    page = await services.issues.list(caller, project=project, ready=True, limit=100)
    return _json(page.items)


async def inbox(project: str, agent: str) -> str:
    services, caller = acting()
    return _json(await services.messages.fetch_inbox(caller, project=project, agent=agent, unread_only=True))


async def knowledge(project: str, id: str) -> str:
    services, caller = acting()
    return _json(await services.knowledge.get(caller, _positive("id", id), project=project))


# URI template → (handler, name, title, description)
RESOURCES: dict[str, tuple[Callable[..., Awaitable[str]], str, str, str]] = {
    "vibe://projects{?limit}": (
        projects,
        "projects",
        "Projects",
        "The projects this token can see (read vibe://projects).",
    ),
    "vibe://projects/{project}": (
        project_overview,
        "project",
        "Project",
        "One project: its record and the state of its board in brief.",
    ),
    "vibe://projects/{project}/board": (
        board,
        "board",
        "Board",
        "Issues by status (ready ones flagged), the active team and the live leases.",
    ),
    "vibe://projects/{project}/ready": (
        ready,
        "ready",
        "Ready issues",
        "Open issues nobody holds whose dependencies are done, best first (up to 100).",
    ),
    "vibe://projects/{project}/agents/{agent}/inbox": (
        inbox,
        "inbox",
        "Inbox",
        "An agent's unread mail, oldest first (read as that agent: a bound token reads only its own).",
    ),
    "vibe://projects/{project}/issues/{id}": (
        issue,
        "issue",
        "Issue",
        "An issue with its comments, dependencies and dependants.",
    ),
    "vibe://projects/{project}/knowledge/{id}": (
        knowledge,
        "knowledge",
        "Knowledge entry",
        "A knowledge entry with its earlier versions.",
    ),
}


# URI template → the arguments it takes ({project}, {?limit}), in order: what completion/complete accepts.
TEMPLATE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    uri: tuple(name.strip() for names in re.findall(r"\{[?&]?([^}]*)\}", uri) for name in names.split(","))
    for uri in RESOURCES
}


# The resources that take a query (by their URI before it) and the parameters each takes
_QUERIES: dict[str, set[str]] = {
    uri.partition("{?")[0]: set(re.findall(r"\{\?([^}]*)\}", uri)[0].split(","))
    for uri in RESOURCES
    if "{?" in uri
}


# URI template (its query left out) → what the URIs without their query look like ({x}: one segment)
_PATTERNS: dict[str, re.Pattern[str]] = {
    base: re.compile("[^/?]+".join(re.escape(part) for part in re.split(r"\{[^}]*\}", base)))
    for base in (uri.partition("{?")[0] for uri in RESOURCES)
}


# The resources whose changes are never announced (`resource_changes` names every other one), and why
NOT_PUSHED: dict[str, str] = {
    "vibe://projects/{project}/agents/{agent}/inbox": (
        "an inbox's changes are not pushed: wait for mail with wait_for_messages"
    ),
}


def unpushed(uri: str) -> str | None:
    """Why no change to `uri` is ever announced (on a listen stream, or to `resources/subscribe`), or
    None when its changes are: a resource of this server (`RESOURCES`) that is pushed, named as
    `resource_changes` names it (no query; an id in ASCII digits without a leading zero)."""
    path, mark, _ = uri.partition("?")
    template = template_of(path)
    if template is None:
        return "not a resource of this server; the resources are: " + ", ".join(RESOURCES)
    if template in NOT_PUSHED:
        return NOT_PUSHED[template]
    if mark:
        return f"its changes are announced as {path[:200]}, without a query"
    if template.endswith("/{id}") and not _WHOLE.fullmatch(path.rsplit("/", 1)[-1]):
        return "an id is a whole number in ASCII digits without a leading zero: no such resource changes"
    return None


def concrete(project: str, agent: str | None) -> list[Resource]:
    """What `resources/list` shows a caller: its project's useful resources, read as they are."""
    base = f"vibe://projects/{project}"
    listed = [
        ("vibe://projects", "projects", "Projects"),
        (base, "project", f"Project {project}"),
        (f"{base}/board", "board", f"Board of {project}"),
        (f"{base}/ready", "ready", f"Ready issues in {project}"),
    ]
    if agent is not None:
        listed.append((f"{base}/agents/{agent}/inbox", "inbox", f"Inbox of {agent}"))
    return [Resource(uri=uri, name=name, title=title, mime_type=JSON_TYPE) for uri, name, title in listed]


def register(mcp: MCPServer) -> None:
    """Add every `vibe://` resource to `mcp`."""
    for uri, (handler, name, title, description) in RESOURCES.items():
        mcp.resource(uri, name=name, title=title, description=description, mime_type=JSON_TYPE)(
            protocol_errors(handler)
        )


def resource_changes(event: Event) -> list[ServerEvent]:
    """The MCP resource changes an event stands for (what `subscriptions/listen` clients hear).

    A project (with its board in brief), its board (issues, the active team, live leases),
    one issue, one knowledge entry.
    """
    if event.project is None:
        return []
    project = f"vibe://projects/{event.project}"
    family = family_of(event.type)
    board_changes: list[ServerEvent] = [ResourceUpdated(f"{project}/board"), ResourceUpdated(project)]
    item = event.payload.get("id")
    if family == EventFamily.ISSUE and isinstance(item, int):
        return [
            ResourceUpdated(f"{project}/issues/{item}"),
            ResourceUpdated(f"{project}/ready"),
            *board_changes,
        ]
    if family in (EventFamily.AGENT, EventFamily.RESERVATION):
        return board_changes
    if family == EventFamily.KNOWLEDGE and isinstance(item, int):
        return [ResourceUpdated(f"{project}/knowledge/{item}")]
    if event.type == EventType.PROJECT_CREATED:
        return [ResourcesListChanged(), ResourceUpdated("vibe://projects"), ResourceUpdated(project)]
    return []


def in_scope(uri: object, project: str) -> bool:
    """True for `vibe://projects` (the list, already filtered per caller) and this project's URIs."""
    if not isinstance(uri, str):
        return False
    if uri == "vibe://projects":
        return True
    prefix = f"vibe://projects/{project}"
    return uri == prefix or uri.startswith(prefix + "/") or uri.startswith(prefix + "?")
