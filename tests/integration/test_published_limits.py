"""Each limit an MCP tool publishes is the one its service enforces, on every text and every list.

The tools are called as plain functions in a bound call context, past the door (which enforces the
published limits itself, api/mcp/arguments.py): what refuses here is the service. For each text the
schema publishes (an argument, or a list's entry) a value far past any limit must be refused naming
the field (an entry by its index, `labels[1]`) with the published number; for each list, one entry
more than published. tests/unit/test_published_limits.py checks that every text and list publishes
a limit at all.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from vibe_ensemble.api.mcp.context import CallContext, bind
from vibe_ensemble.api.mcp.profiles import PROFILES
from vibe_ensemble.api.mcp.server import registered_tools
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import KnowledgeKind
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.services import Services

HUGE = "x" * 100_000  # past every text limit (MAX_BODY is 65,536)

# What each call needs besides the argument probed: required arguments, the agent an admin acts as,
# a field to change for the updates. Issue #1, entry #1 and agent w1 exist.
NEEDED: dict[str, Any] = {
    "title": "t",
    "body": "b",
    "kind": KnowledgeKind.NOTE,
    "subject": "s",
    "resolution": "r",
    "id": 1,
    "paths": ["a.py"],
    "query": "q",
    "slug": "p2",
    "name": "w1",
    "ids": [1],
    "agent": "w1",
}
CHANGE = {"update_issue": {"title": "t"}, "update_knowledge": {"title": "t"}, "send_message": {"to": ["w1"]}}
ENTRY: dict[str, Any] = {"string": "a", "integer": 1}  # a valid entry of a list, by its type


def _calls() -> list[tuple[str, str, dict[str, Any]]]:
    """(tool, argument, its published schema) for every text and list a tool takes."""
    tools = registered_tools()
    return [
        (fn.__name__, field, prop)
        for fn in PROFILES["full"]
        for field, prop in tools[fn.__name__].parameters["properties"].items()
        if prop.get("type") in ("string", "array") and "enum" not in prop
    ]


def _arguments(fn: Any, field: str, value: Any) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    given = {
        k: v
        for k, v in NEEDED.items()
        if k in params and (k == "agent" or params[k].default is params[k].empty)
    }
    return {**given, **CHANGE.get(fn.__name__, {}), field: value}


async def _refusal(services: Services, admin: Caller, tool: str, arguments: dict[str, Any]) -> InvalidInput:
    [fn] = [f for f in PROFILES["full"] if f.__name__ == tool]
    with bind(CallContext(services, admin)), pytest.raises(InvalidInput) as refused:
        await fn(**arguments)
    return refused.value


@pytest.mark.parametrize(("tool", "field", "prop"), _calls(), ids=lambda v: v if isinstance(v, str) else "")
async def test_the_service_enforces_the_published_limit(
    services: Services, admin: Caller, tool: str, field: str, prop: dict[str, Any]
) -> None:
    await services.agents.register(admin, name="w1")
    await services.issues.create(admin, title="t")
    await services.knowledge.add(admin, kind=KnowledgeKind.NOTE, title="t", body="b", agent="w1")
    [fn] = [f for f in PROFILES["full"] if f.__name__ == tool]
    if prop["type"] == "string":
        refused = await _refusal(services, admin, tool, _arguments(fn, field, HUGE))
        assert (refused.field, refused.rule) == (
            field,
            f"must be at most {prop['maxLength']} characters (got {len(HUGE)})",
        )
        return
    entry = ENTRY[prop["items"]["type"]]
    too_many = [entry] * (prop["maxItems"] + 1)
    refused = await _refusal(services, admin, tool, _arguments(fn, field, too_many))
    assert refused.field == field and refused.rule.startswith(f"at most {prop['maxItems']} "), refused
    assert refused.rule.endswith(f"(got {len(too_many)})"), refused
    if prop["items"]["type"] == "string":
        refused = await _refusal(services, admin, tool, _arguments(fn, field, [entry, HUGE]))
        assert (refused.field, refused.rule) == (
            f"{field}[1]",
            f"must be at most {prop['items']['maxLength']} characters (got {len(HUGE)})",
        )
