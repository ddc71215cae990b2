"""The compact tool schemas: smaller, and still true to what the tools accept and return."""

from __future__ import annotations

from typing import Annotated

from mcp import Client
from mcp.server import MCPServer
from pydantic import Field

from vibe_ensemble.api.mcp.compact import compact_input, compact_tools, inline_enums, shallow_output
from vibe_ensemble.domain.enums import Priority
from vibe_ensemble.domain.models import Reservation
from vibe_ensemble.domain.rules import MAX_ID


def test_titles_and_null_variants_go_enums_come_inline() -> None:
    schema = {
        "type": "object",
        "title": "fArguments",
        "$defs": {"Priority": {"enum": ["p0", "p1"], "title": "Priority", "type": "string"}},
        "properties": {
            "title": {"title": "Title", "type": "string", "description": "keep me"},  # a property named title
            "priority": {"anyOf": [{"$ref": "#/$defs/Priority"}, {"type": "null"}], "default": None},
            "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID, "title": "Id"},
            "count": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 3},
        },
        "required": ["title"],
    }
    assert compact_input(inline_enums(schema)) == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "keep me"},
            "priority": {"enum": ["p0", "p1"], "type": "string"},
            "id": {"type": "integer", "minimum": 1},
            # a non-null default keeps the null variant: null and omitted differ there
            "count": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": 3},
        },
        "required": ["title"],
    }


def test_shallow_output_keeps_top_level_types_and_nullability() -> None:
    full = {
        "$defs": {"Reservation": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        "properties": {
            "granted": {"type": "array", "items": {"$ref": "#/$defs/Reservation"}},
            "lease": {"anyOf": [{"$ref": "#/$defs/Reservation"}, {"type": "null"}]},
            "count": {"type": "integer"},
        },
        "required": ["granted", "lease", "count"],
        "type": "object",
    }
    assert shallow_output(full) == {
        "type": "object",
        "properties": {
            "granted": {"type": "array"},
            "lease": {"type": ["object", "null"]},
            "count": {"type": "integer"},
        },
    }


async def test_compacted_tools_still_validate_and_return_structured_content() -> None:
    mcp = MCPServer("t")

    @mcp.tool()
    async def pick(
        priority: Annotated[Priority | None, Field(description="p0 to p3.")] = None,
        limit: Annotated[int, Field(ge=1, le=5, description="At most.")] = 2,
    ) -> list[Reservation]:
        """Pick things."""
        return []

    compact_tools(mcp._tool_manager.list_tools())  # the SDK offers no public way to reach them
    async with Client(mcp) as client:
        [tool] = (await client.list_tools()).tools
        assert tool.input_schema["properties"]["priority"] == {
            "enum": ["p0", "p1", "p2", "p3"],
            "type": "string",
            "description": "p0 to p3.",
        }
        assert tool.output_schema == {"type": "object", "properties": {"result": {"type": "array"}}}
        ok = await client.call_tool("pick", {"priority": None, "limit": 5})
        assert not ok.is_error and ok.structured_content == {"result": []}
        refused = await client.call_tool("pick", {"limit": 6})
        assert refused.is_error  # validation still uses the full model
