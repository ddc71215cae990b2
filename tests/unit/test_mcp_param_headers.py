"""The SDK checks a call's `Mcp-Param-*` headers against the tool's `x-mcp-header` declarations: still
for a tool that declares one, skipped (it could find nothing) for a tool that declares none, as none
of ours does (api/mcp/server.py)."""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.tools import Tool
from pydantic import Field

from vibe_ensemble.api.mcp.server import _check_param_headers_where_declared, build_mcp, registered_tools
from vibe_ensemble.ops.config import Settings


def test_our_tools_declare_no_header_so_none_is_walked() -> None:
    lookup = build_mcp(Settings(), profile="full")._lowlevel_server.get_tool_input_schema
    assert lookup is not None
    for name, tool in registered_tools().items():
        assert "x-mcp-header" not in json.dumps(tool.parameters), name
        assert lookup(name) is None, name


def test_a_tool_that_declares_one_is_still_checked() -> None:
    async def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return region

    async def plain(count: int) -> int:
        return count

    tools = [Tool.from_function(regional), Tool.from_function(plain)]
    mcp = MCPServer("test", tools=tools)
    _check_param_headers_where_declared(mcp, tools)
    lookup = mcp._lowlevel_server.get_tool_input_schema
    assert lookup is not None
    schema = lookup("regional")
    assert schema is not None and schema["properties"]["region"]["x-mcp-header"] == "Region"
    assert lookup("plain") is None
    assert lookup("unknown") is None
