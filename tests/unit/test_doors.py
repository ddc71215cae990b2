"""The MCP tools and the REST routes offer the same operations, with the same names and the same limits.

Each pair below is one operation through both doors. For every pair, the names a client passes must
match (path parameters renamed as listed, `project` is in the REST path), and every bound one door
declares on a shared field (length, item count, minimum, maximum) the other declares too, equal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.mcp import build_mcp
from vibe_ensemble.domain.rules import MAX_ID
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

JSON = dict[str, Any]
P = "/api/v1/projects/{project}"

# MCP tool -> (method, REST path). The admin and project tools sit in the `full` profile.
PAIRS: dict[str, tuple[str, str]] = {
    "register_agent": ("POST", P + "/agents"),
    "heartbeat": ("POST", P + "/agents/{name}/heartbeat"),
    "list_agents": ("GET", P + "/agents"),
    "retire_agent": ("POST", P + "/agents/{name}/retire"),
    "create_issue": ("POST", P + "/issues"),
    "list_issues": ("GET", P + "/issues"),
    "get_issue": ("GET", P + "/issues/{issue_id}"),
    "update_issue": ("PATCH", P + "/issues/{issue_id}"),
    "claim_issue": ("POST", P + "/issues/{issue_id}/claim"),
    "comment_issue": ("POST", P + "/issues/{issue_id}/comments"),
    "close_issue": ("POST", P + "/issues/{issue_id}/close"),
    "send_message": ("POST", P + "/messages"),
    "fetch_inbox": ("GET", P + "/agents/{name}/inbox"),
    "mark_read": ("POST", P + "/agents/{name}/inbox/read"),
    "acknowledge_messages": ("POST", P + "/agents/{name}/inbox/ack"),
    "wait_for_messages": ("GET", P + "/agents/{name}/inbox/wait"),
    "reserve_paths": ("POST", P + "/reservations"),
    "release_paths": ("POST", P + "/reservations/release"),
    "check_paths": ("POST", P + "/reservations/check"),
    "add_knowledge": ("POST", P + "/knowledge"),
    "update_knowledge": ("PATCH", P + "/knowledge/{entry_id}"),
    "search_knowledge": ("GET", P + "/knowledge/search"),
    "get_knowledge": ("GET", P + "/knowledge/{entry_id}"),
    "create_project": ("POST", "/api/v1/projects"),
    "list_projects": ("GET", "/api/v1/projects"),
}
# A REST path parameter and the MCP argument it stands for.
RENAMED = {"issue_id": "id", "entry_id": "id"}
# Agent routes name the agent in the path; the MCP tool acts as the caller or its `agent` argument
# (`retire_agent` names the agent to retire: `name`).
AGENT_IN_PATH = {"heartbeat", "fetch_inbox", "mark_read", "acknowledge_messages", "wait_for_messages"}
# Where the doors differ on purpose. MCP arguments cannot be "set to null" (null means "leave it"),
# so MCP detaches a parent with 0, as it unassigns with "".
DIFFERENT = {("update_issue", "parent"): ({"minimum": 0}, {"minimum": 1})}
BOUNDS = ("maxLength", "minLength", "maxItems", "minItems", "minimum", "maximum")


def _resolve(node: Any, doc: JSON) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        return _resolve(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]], doc)
    return node


def _bounds(prop: JSON, doc: JSON) -> JSON:
    """The declared bounds of a property (nullable variants merged; the id ceiling left out)."""
    prop = _resolve(prop, doc)
    found: JSON = {}
    for variant in prop.get("anyOf", [prop]):
        variant = _resolve(variant, doc)
        found.update({k: variant[k] for k in BOUNDS if k in variant and variant[k] != MAX_ID})
        if "items" in variant:
            inner = _bounds(variant["items"], doc)
            found.update({f"items.{k}": v for k, v in inner.items()})
    return found


def _rest_fields(doc: JSON, method: str, path: str) -> dict[str, JSON]:
    operation = doc["paths"][path][method.lower()]
    fields = {
        RENAMED.get(p["name"], p["name"]): _bounds(p.get("schema", {}), doc)
        for p in operation.get("parameters", [])
        if p["name"] != "project"
    }
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        for name, prop in _resolve(body, doc).get("properties", {}).items():
            fields[name] = _bounds(prop, doc)
    return fields


@pytest.fixture(scope="module")
def doors() -> tuple[dict[str, JSON], JSON]:
    import asyncio

    async def read() -> tuple[dict[str, JSON], JSON]:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = Runtime(Settings(data_dir=Path(tmp)))
            tools = await build_mcp(runtime.settings, profile="full").list_tools()
            return {t.name: t.input_schema for t in tools}, create_app(runtime).openapi()

    return asyncio.run(read())


def test_every_rest_pair_exists_and_every_tool_is_paired(doors: tuple[dict[str, JSON], JSON]) -> None:
    tools, doc = doors
    assert sorted(set(tools) - set(PAIRS)) == [], "pair these MCP tools with their REST routes"
    for tool, (method, path) in PAIRS.items():
        assert method.lower() in doc["paths"].get(path, {}), f"{tool}: no {method} {path}"


@pytest.mark.parametrize("tool", sorted(PAIRS))
def test_both_doors_take_the_same_names_with_the_same_limits(
    tool: str, doors: tuple[dict[str, JSON], JSON]
) -> None:
    tools, doc = doors
    schema = tools[tool]
    mcp = {
        name: _bounds(prop, doc) for name, prop in schema.get("properties", {}).items() if name != "project"
    }
    rest = _rest_fields(doc, *PAIRS[tool])
    if tool in AGENT_IN_PATH:  # the agent is named in the path: …/agents/{name}/…
        rest["agent"] = rest.pop("name")
    if tool == "claim_issue":
        rest["id"] = mcp.get("id", {})  # also POST …/issues/claim without an id
    assert sorted(mcp) == sorted(rest), f"{tool}: MCP {sorted(mcp)} vs REST {sorted(rest)}"
    for name in mcp:
        expected = DIFFERENT.get((tool, name), (rest[name], rest[name]))
        assert (mcp[name], rest[name]) == expected, (
            f"{tool}.{name}: MCP declares {mcp[name]}, REST {rest[name]}"
        )
