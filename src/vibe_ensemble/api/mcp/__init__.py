"""The agents' front door: MCP over Streamable HTTP (`/mcp`) and stdio.

- `endpoint`: authenticates `/mcp` and binds the call context; `refusals`: the SDK's refusals of a
  malformed request, said as ours are;
- `context`: the call context (services, caller, rate limit) and how errors reach the agent;
- `tools/`: the tools by concept, each a module-level function; `profiles`: which tools each profile has;
- `prompts`, `resources`: the briefing prompts and every `vibe://` resource;
- `server`: `build_mcp` registers all of them; `compact`: the small published schemas;
- `notifier`: resource-change notifications from the event log; `reference`: the generated tool docs.
"""

from vibe_ensemble.api.mcp.endpoint import MCPEndpoint
from vibe_ensemble.api.mcp.server import build_mcp, transport_security

__all__ = ["MCPEndpoint", "build_mcp", "transport_security"]
