"""The MCP tools, one module per concept; each module lists its tools in `TOOLS`.

Every tool is a plain module-level function: it reads the caller from the bound call
context (`api.mcp.context`) and calls one service. `api.mcp.server.build_mcp` registers them.
"""
