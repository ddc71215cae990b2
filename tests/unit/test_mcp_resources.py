"""Which MCP resources an event changes (what `subscriptions/listen` clients hear about)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourcesListChanged, ResourceUpdated

from vibe_ensemble.api.mcp.resources import NOT_PUSHED, RESOURCES, resource_changes, template_of, unpushed
from vibe_ensemble.api.mcp.server import build_mcp
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Event
from vibe_ensemble.ops.config import Settings

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


ONCE = "a query parameter of a vibe:// URI is given at most once"


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("vibe://projects?limit=1&limit=2", ONCE),
        ("vibe://projects?x=1", "vibe://projects takes only the query parameter limit"),
        ("vibe://projects?limit=1&x=1", "vibe://projects takes only the query parameter limit"),
        ("vibe://projects/web/issues/1?x=1", "vibe://projects/{project}/issues/{id} takes no query"),
        ("vibe://projects/web/board?limit=1", "vibe://projects/{project}/board takes no query"),
        (
            "vibe://projects/web/agents/a/inbox?x",
            "vibe://projects/{project}/agents/{agent}/inbox takes no query",
        ),
        ("vibe://projects/web?limit=1&limit=2", "vibe://projects/{project} takes no query"),
    ],
)
async def test_a_refused_query_says_the_rule_it_breaks_in_its_message_and_its_data(
    uri: str, rule: str
) -> None:
    """The message and `data.rule` name the same rule, the one broken (a repeated parameter was
    refused with the rule about which parameters a resource takes)."""
    async with Client(build_mcp(Settings())) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(uri)
    error = refused.value.error
    assert error.code == -32602
    assert error.data == {"code": "invalid_input", "field": "uri", "rule": rule}
    assert error.message.startswith(f"[invalid_input] uri: {rule} (got '")


def test_what_a_listen_honors_is_what_the_events_announce() -> None:
    """Every URI an event announces is one `unpushed` says is pushed, and every resource it does not
    list in NOT_PUSHED is announced by some event: a new resource is pushed, or says why not."""
    announced = {
        change.uri
        for type_ in EventType
        for change in resource_changes(event(type_.value, id=7, slug="web"))
        if isinstance(change, ResourceUpdated)
    }
    assert all(unpushed(uri) is None for uri in announced), announced
    pushed = {template_of(uri) for uri in announced}
    assert pushed == {uri.partition("{?")[0] for uri in RESOURCES} - set(NOT_PUSHED)
    assert unpushed(f"{P}/agents/ann/inbox") == NOT_PUSHED["vibe://projects/{project}/agents/{agent}/inbox"]
    assert unpushed(f"{P}/issues/7?x=1") == f"its changes are announced as {P}/issues/7, without a query"
