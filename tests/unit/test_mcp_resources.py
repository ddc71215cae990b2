"""Which MCP resources an event changes (what `subscriptions/listen` clients hear about)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated

from vibe_ensemble.api.mcp.resources import resource_changes
from vibe_ensemble.domain.models import Event

P = "vibe://projects/web"


def event(type_: str, project: str | None = "web", **payload: Any) -> Event:
    return Event(id=1, time=datetime.now(UTC), project=project, type=type_, actor="a", payload=payload)


def test_issue_changes_touch_the_issue_the_ready_list_the_board_and_the_project() -> None:
    assert resource_changes(event("issue.claimed", id=7)) == [
        ResourceUpdated(f"{P}/issues/7"),
        ResourceUpdated(f"{P}/ready"),
        ResourceUpdated(f"{P}/board"),
        ResourceUpdated(P),
    ]


def test_team_and_lease_changes_touch_the_board() -> None:
    board = [ResourceUpdated(f"{P}/board"), ResourceUpdated(P)]
    for type_ in ("agent.status", "agent.registered", "reservation.granted", "reservation.released"):
        assert resource_changes(event(type_, agent="x")) == board


def test_knowledge_and_projects() -> None:
    assert resource_changes(event("knowledge.updated", id=3)) == [ResourceUpdated(f"{P}/knowledge/3")]
    assert resource_changes(event("project.created", slug="web")) == [
        ResourcesListChanged(),
        ResourceUpdated("vibe://projects"),
        ResourceUpdated(P),
    ]


def test_mail_tokens_and_events_without_a_project_change_no_resource() -> None:
    assert resource_changes(event("message.sent", id=1, recipients=["b"])) == []
    assert resource_changes(event("token.created", project=None, id=1)) == []
    assert resource_changes(event("issue.updated", id="not an id")) == []
