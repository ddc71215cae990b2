"""Every limit a door enforces on a text or a list is published where a client reads it: in each MCP
tool's input schema (`tools/list`, and so docs/mcp-tools.md) and in the REST OpenAPI document.

A walk of the schemas, not a list of fields: a new text argument, list or list of texts without
its limit fails here. Numbers are left out: their bounds are pydantic's own (`ge`/`le`), published
and enforced by the same declaration (the ids' technical bound, `rules.MAX_ID`, is enforced but not
published, see api/mcp/compact.py). tests/integration/test_published_limits.py checks that each
published limit is the one the service enforces.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcp import Client

from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.mcp.server import build_mcp
from vibe_ensemble.domain.rules import MAX_LABEL, MAX_PATTERN
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.runtime import Runtime

JSON = dict[str, Any]

# REST values checked against a closed set rather than a length: an event type (or family) from the
# catalogue, and an event id.
REST_UNBOUNDED = {
    "get /api/v1/events query:types[]",
    "get /api/v1/events/stream query:types[]",
    "get /api/v1/events/stream header:Last-Event-ID",
}


def unbounded(where: str, schema: JSON, defs: JSON) -> Iterator[tuple[str, str]]:
    """Where in `schema` a text has no maxLength or a list no maxItems (`labels[]`: a list's entries)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    for variant in schema.get("anyOf", []):
        yield from unbounded(where, variant, defs)
    if "enum" in schema or "const" in schema:
        return
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema and schema.get("format") != "date-time":
        yield where, "a text without maxLength"
    if kind == "array":
        if "maxItems" not in schema:
            yield where, "a list without maxItems"
        yield from unbounded(f"{where}[]", schema.get("items", {}), defs)
    for name, prop in schema.get("properties", {}).items():
        yield from unbounded(f"{where}.{name}" if where else name, prop, defs)


async def _tools() -> list[Any]:
    async with Client(build_mcp(Settings(), profile="full")) as client:
        return list((await client.list_tools()).tools)


async def test_every_tool_publishes_the_limit_of_each_text_and_list() -> None:
    missing = [
        (f"{tool.name}.{where}", problem)
        for tool in await _tools()
        for where, problem in unbounded("", tool.input_schema, tool.input_schema.get("$defs", {}))
    ]
    assert missing == []


async def test_a_lists_entries_publish_their_limit() -> None:
    """The entries the tester found unpublished: labels, tags, capabilities (64), paths (256)."""
    schemas = {tool.name: tool.input_schema["properties"] for tool in await _tools()}
    for tool, field, most in [
        ("register_agent", "capabilities", MAX_LABEL),
        ("create_issue", "labels", MAX_LABEL),
        ("update_issue", "labels", MAX_LABEL),
        ("add_knowledge", "tags", MAX_LABEL),
        ("update_knowledge", "tags", MAX_LABEL),
        ("search_knowledge", "tags", MAX_LABEL),
        ("reserve_paths", "paths", MAX_PATTERN),
        ("release_paths", "paths", MAX_PATTERN),
        ("check_paths", "paths", MAX_PATTERN),
    ]:
        assert schemas[tool][field]["items"] == {"type": "string", "maxLength": most}, (tool, field)


async def test_the_door_refuses_an_entry_past_its_limit_naming_it() -> None:
    """Refused before the tool runs (no call context needed), naming `labels[2]` as the services do."""
    async with Client(build_mcp(Settings(), profile="full")) as client:
        refused = await client.call_tool("create_issue", {"title": "t", "labels": ["a", "b", "x" * 65]})
        assert refused.is_error
        [text] = [block.text for block in refused.content if block.type == "text"]
        assert text.startswith(
            "[invalid_input] create_issue: labels[2]: must be at most 64 characters (got 65) "
        ), text
        assert json.loads(text[text.index("{") :]) == {
            "field": "labels[2]",
            "rule": "must be at most 64 characters (got 65)",
        }
        refused = await client.call_tool("check_paths", {"paths": ["a.py", "p" * 257]})
        assert refused.is_error and "paths[1]: must be at most 256 characters (got 257)" in str(
            refused.content
        )
        # within the limit, the door lets it through (to the missing credential here)
        passed = await client.call_tool("create_issue", {"title": "t", "labels": ["x" * 64]})
        assert "[unauthenticated]" in str(passed.content)


def _openapi() -> JSON:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Runtime(Settings(data_dir=Path(tmp))))
        doc: JSON = app.openapi()
    return doc


def test_every_rest_body_and_parameter_publishes_its_limits() -> None:
    doc = _openapi()
    defs = doc["components"]["schemas"]
    missing = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                where = f"{method} {path} {param['in']}:{param['name']}"
                missing += [m for m in unbounded(where, param["schema"], defs) if m[0] not in REST_UNBOUNDED]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                missing += list(unbounded(f"{method} {path} body", body, defs))
    assert missing == []
