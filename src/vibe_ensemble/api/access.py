"""Which operation each door needs: every HTTP route and MCP tool, prompt and resource, mapped to an `Op`.

This module decides nothing: authorisation happens in the services
(`Caller.require`). It writes down, for people and for tests, which operation
each entry point performs, so that

- `tests/e2e/test_security_matrix.py` can check the list is complete (a route or
  tool without an entry fails it) and true (each role gets 403 exactly where the
  matrix says so), and
- `docs/security.md` carries the permission table rendered from it
  (`python -m vibe_ensemble.api.access --write docs/security.md`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from vibe_ensemble.api import generated
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.permissions import GLOBAL_OPS, PERMISSIONS, Op

Auth = Literal["public", "token", "per-call", "metrics-token"]


@dataclass(frozen=True)
class Access:
    op: Op | None  # the operation the service requires; None for public or per-call entries
    auth: Auth = "token"
    note: str = ""


def needs(op: Op, note: str = "") -> Access:
    return Access(op, "token", note)


PUBLIC = Access(None, "public")
METRICS = Access(
    None,
    "metrics-token",
    "only VIBE_METRICS_TOKEN as a bearer token, any Host; unset: open on a loopback-only server only",
)
PER_CALL = Access(None, "per-call", "any valid token; each MCP tool, prompt and resource checks its own op")

P = "/api/v1/projects/{project}"
_ASSIGN = "assigning another agent also needs issue.assign_others"
_CLAIMED = "an issue another agent has claimed: its assignee, or also issue.change_claimed"
_CHANGE = _ASSIGN + "; " + _CLAIMED
_OWN_EVENTS = "a scoped token sees its own project's events only"
_BOARD = "also project.read, agent.read and reservation.read"
_DASH_BOARD = "also project.read, agent.read, reservation.read and event.read"
_DASH_MAIL = (
    "threads: senders, recipients, subjects, read and acknowledged state; bodies need message.oversee"
)
_DASH_SEARCH = "with q, mail too (event.read): subjects, and bodies with message.oversee"
_BRIEFING = "also the read ops of agents, issues, leases and knowledge; mail only for an acting agent"

# (method, path) → access. Methods as served; HEAD is implied by GET. WebSocket routes use "WS".
ROUTES: dict[tuple[str, str], Access] = {
    # ops and docs
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v1/docs"): PUBLIC,
    ("GET", "/api/v1/docs/assets/{name}"): PUBLIC,
    # MCP
    ("GET", "/mcp"): PER_CALL,
    ("POST", "/mcp"): PER_CALL,
    ("DELETE", "/mcp"): PER_CALL,
    # projects
    ("GET", "/api/v1/projects"): needs(Op.PROJECT_READ, "a scoped token sees its own project only"),
    ("POST", "/api/v1/projects"): needs(Op.PROJECT_ADMIN),
    ("GET", P): needs(Op.PROJECT_READ),
    # agents
    ("GET", P + "/agents"): needs(Op.AGENT_READ),
    ("POST", P + "/agents"): needs(Op.AGENT_ACT),
    ("POST", P + "/agents/{name}/heartbeat"): needs(Op.AGENT_ACT),
    ("POST", P + "/agents/{name}/retire"): needs(Op.AGENT_RETIRE),
    # issues
    ("GET", P + "/issues"): needs(Op.ISSUE_READ),
    ("POST", P + "/issues"): needs(Op.ISSUE_WRITE, _ASSIGN),
    ("POST", P + "/issues/claim"): needs(Op.ISSUE_WRITE),
    ("GET", P + "/issues/{issue_id}"): needs(Op.ISSUE_READ),
    ("PATCH", P + "/issues/{issue_id}"): needs(Op.ISSUE_WRITE, _CHANGE),
    ("POST", P + "/issues/{issue_id}/claim"): needs(Op.ISSUE_WRITE),
    ("POST", P + "/issues/{issue_id}/comments"): needs(Op.ISSUE_WRITE),
    ("POST", P + "/issues/{issue_id}/close"): needs(Op.ISSUE_WRITE, _CLAIMED),
    # mail
    ("POST", P + "/messages"): needs(Op.MESSAGE_SEND),
    ("GET", P + "/agents/{name}/inbox"): needs(Op.MESSAGE_READ),
    ("POST", P + "/agents/{name}/inbox/read"): needs(Op.MESSAGE_READ),
    ("POST", P + "/agents/{name}/inbox/ack"): needs(Op.MESSAGE_READ),
    ("GET", P + "/agents/{name}/inbox/wait"): needs(Op.MESSAGE_READ),
    # leases, knowledge and the board
    ("GET", P + "/reservations"): needs(Op.RESERVATION_READ),
    ("POST", P + "/reservations"): needs(Op.RESERVATION_WRITE),
    ("POST", P + "/reservations/release"): needs(Op.RESERVATION_WRITE),
    ("POST", P + "/reservations/check"): needs(Op.RESERVATION_READ),
    ("GET", P + "/knowledge"): needs(Op.KNOWLEDGE_READ),
    ("POST", P + "/knowledge"): needs(Op.KNOWLEDGE_WRITE),
    ("GET", P + "/knowledge/search"): needs(Op.KNOWLEDGE_READ),
    ("GET", P + "/knowledge/{entry_id}"): needs(Op.KNOWLEDGE_READ),
    ("PATCH", P + "/knowledge/{entry_id}"): needs(Op.KNOWLEDGE_WRITE),
    ("GET", P + "/board"): needs(Op.ISSUE_READ, _BOARD),
    # events and the live feeds
    ("GET", "/api/v1/events"): needs(Op.EVENT_READ, _OWN_EVENTS),
    ("GET", "/api/v1/events/stream"): needs(Op.EVENT_READ, _OWN_EVENTS),
    ("WS", "/api/v1/events/ws"): needs(Op.EVENT_READ, _OWN_EVENTS),
    # tokens and audit (admin, unscoped)
    ("GET", "/api/v1/tokens"): needs(Op.TOKEN_ADMIN),
    ("POST", "/api/v1/tokens"): needs(Op.TOKEN_ADMIN),
    ("DELETE", "/api/v1/tokens/{token_id}"): needs(Op.TOKEN_ADMIN),
    ("GET", "/api/v1/audit"): needs(Op.AUDIT_READ),
    # the dashboard (a session cookie from /login, or a bearer token; docs/dashboard.md)
    ("GET", "/login"): Access(None, "public", "paste a token; starts a session"),
    ("POST", "/login"): Access(None, "public", "paste a token; starts a session"),
    ("POST", "/logout"): Access(None, "public", "ends the session, copies of its cookie too"),
    ("GET", "/"): needs(Op.ISSUE_READ, _DASH_BOARD),
    ("GET", "/fragments/board"): needs(Op.ISSUE_READ, _DASH_BOARD),
    ("GET", "/issues/{issue_id}"): needs(Op.ISSUE_READ),
    ("GET", "/fragments/issues/{issue_id}"): needs(Op.ISSUE_READ),
    ("GET", "/mail"): needs(Op.EVENT_READ, _DASH_MAIL),
    ("GET", "/fragments/mail"): needs(Op.EVENT_READ, _DASH_MAIL),
    ("GET", "/agents/{name}"): needs(Op.AGENT_READ, "also issue.read, reservation.read and event.read"),
    ("GET", "/fragments/agents/{name}"): needs(
        Op.AGENT_READ, "also issue.read, reservation.read and event.read"
    ),
    ("GET", "/graph"): needs(Op.ISSUE_READ),
    ("GET", "/fragments/graph"): needs(Op.ISSUE_READ),
    ("GET", "/knowledge"): needs(Op.KNOWLEDGE_READ, _DASH_SEARCH),
    ("GET", "/fragments/knowledge"): needs(Op.KNOWLEDGE_READ, _DASH_SEARCH),
    ("GET", "/knowledge/{entry_id}"): needs(Op.KNOWLEDGE_READ),
    ("GET", "/fragments/knowledge/{entry_id}"): needs(Op.KNOWLEDGE_READ),
    ("GET", "/trends"): needs(Op.ISSUE_READ, "also event.read (mail volume)"),
    ("GET", "/fragments/trends"): needs(Op.ISSUE_READ, "also event.read (mail volume)"),
    ("GET", "/mail/thread"): needs(Op.EVENT_READ, _DASH_MAIL),
    ("GET", "/fragments/mail/thread"): needs(Op.EVENT_READ, _DASH_MAIL),
    ("POST", "/messages"): needs(Op.MESSAGE_SEND, "an overseer message, also in the audit log"),
    ("POST", "/agents/{name}/retire"): needs(Op.AGENT_RETIRE),
    ("GET", "/fragments/attention"): needs(Op.ISSUE_READ, "and agent, lease and event reads"),
    ("POST", "/agents/{name}/release"): needs(
        Op.AGENT_RETIRE, "its leases end, its work goes back to the pool"
    ),
    ("GET", "/leases"): needs(Op.RESERVATION_READ),
    ("GET", "/fragments/leases"): needs(Op.RESERVATION_READ),
    ("POST", "/leases/{lease_id}/release"): needs(
        Op.AGENT_RETIRE, "ends another agent's lease; audited as reservation.revoked"
    ),
}

# MCP tool name → access (the `full` profile is a superset of `core`).
TOOLS: dict[str, Access] = {
    "register_agent": needs(Op.AGENT_ACT, "registering a coordinator also needs agent.coordinate"),
    "heartbeat": needs(Op.AGENT_ACT),
    "list_agents": needs(Op.AGENT_READ),
    "create_issue": needs(Op.ISSUE_WRITE, _ASSIGN),
    "list_issues": needs(Op.ISSUE_READ),
    "get_issue": needs(Op.ISSUE_READ),
    "update_issue": needs(Op.ISSUE_WRITE, _CHANGE),
    "claim_issue": needs(Op.ISSUE_WRITE),
    "comment_issue": needs(Op.ISSUE_WRITE, "any issue, claimed or not"),
    "close_issue": needs(Op.ISSUE_WRITE, _CLAIMED),
    "send_message": needs(Op.MESSAGE_SEND),
    "fetch_inbox": needs(Op.MESSAGE_READ),
    "mark_read": needs(Op.MESSAGE_READ),
    "acknowledge_messages": needs(Op.MESSAGE_READ),
    "wait_for_messages": needs(Op.MESSAGE_READ),
    "reserve_paths": needs(Op.RESERVATION_WRITE),
    "release_paths": needs(Op.RESERVATION_WRITE),
    "check_paths": needs(Op.RESERVATION_READ),
    "add_knowledge": needs(Op.KNOWLEDGE_WRITE),
    "update_knowledge": needs(Op.KNOWLEDGE_WRITE),
    "search_knowledge": needs(Op.KNOWLEDGE_READ),
    "get_knowledge": needs(Op.KNOWLEDGE_READ),
    "create_project": needs(Op.PROJECT_ADMIN),
    "list_projects": needs(Op.PROJECT_READ),
    "retire_agent": needs(Op.AGENT_RETIRE),
}

# MCP prompt name → access.
PROMPTS: dict[str, Access] = {
    "coordinator_briefing": needs(Op.PROJECT_READ, _BRIEFING),
    "worker_briefing": needs(Op.PROJECT_READ, _BRIEFING),
}


# MCP resource (URI template) → access.
RESOURCES: dict[str, Access] = {
    "vibe://projects{?limit}": needs(Op.PROJECT_READ, "a scoped token sees its own project only"),
    "vibe://projects/{project}": needs(Op.PROJECT_READ, "with the board in brief (issue.read)"),
    "vibe://projects/{project}/board": needs(Op.ISSUE_READ),
    "vibe://projects/{project}/ready": needs(Op.ISSUE_READ),
    "vibe://projects/{project}/agents/{agent}/inbox": needs(
        Op.MESSAGE_READ, "as that agent: a bound token reads only its own"
    ),
    "vibe://projects/{project}/issues/{id}": needs(Op.ISSUE_READ),
    "vibe://projects/{project}/knowledge/{id}": needs(Op.KNOWLEDGE_READ),
}


def route_keys(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path) an app serves, HEAD folded into GET, WebSocket routes as "WS"."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's lazily included routers
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from route_keys(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Mount):
            yield from route_keys(route.routes, prefix + route.path)
        elif isinstance(route, WebSocketRoute):
            yield ("WS", prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield (method, prefix + route.path)


def unmapped_routes(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    return sorted(set(route_keys(routes)) - set(ROUTES))


def _mark(access: Access, role: TokenRole) -> str:
    if access.auth == "public":
        return "public"
    if access.auth == "metrics-token":
        return "—"  # no API token opens it, whatever its role
    if access.op is None:
        return "token"
    return "✓" if access.op in PERMISSIONS[role] else "—"


def _row(door: str, name: str, access: Access) -> str:
    op = access.op.value if access.op else access.auth
    scoped = "—" if access.op in GLOBAL_OPS else "own project"
    if access.auth == "public":
        scoped = "public"
    if access.auth == "metrics-token":
        scoped = "—"
    marks = " | ".join(_mark(access, role) for role in TokenRole)
    return f"| {door} | `{name}` | {op} | {marks} | {scoped} | {access.note} |"


def render_matrix() -> str:
    """The permission table of docs/security.md, rendered from this module and `PERMISSIONS`."""
    roles = " | ".join(role.value for role in TokenRole)
    lines = [
        f"| door | entry point | operation | {roles} | project-scoped token | note |",
        "|---|---|---|" + "---|" * len(TokenRole) + "---|---|",
    ]
    for (method, path), access in sorted(ROUTES.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        door = "live" if method == "WS" or path.endswith("/stream") else "HTTP"
        if not path.startswith(("/api/", "/mcp", "/healthz", "/readyz", "/metrics", "/docs")):
            door = "dashboard"
        lines.append(_row(door, f"{method} {path}", access))
    for name, access in sorted(TOOLS.items()):
        lines.append(_row("MCP tool", name, access))
    for name, access in sorted(PROMPTS.items()):
        lines.append(_row("MCP prompt", name, access))
    for uri, access in sorted(RESOURCES.items()):
        lines.append(_row("MCP resource", uri, access))
    return "\n".join(lines)


BEGIN = "<!-- permission-matrix:begin (generated by python -m vibe_ensemble.api.access) -->"
END = "<!-- permission-matrix:end -->"


def splice(document: str) -> str:
    """`document` with the text between the matrix markers replaced by the current table."""
    return generated.splice(document, BEGIN, END, render_matrix())


def main(argv: list[str] | None = None) -> int:
    return generated.command("permission matrix", render_matrix, splice, argv)


if __name__ == "__main__":
    sys.exit(main())
