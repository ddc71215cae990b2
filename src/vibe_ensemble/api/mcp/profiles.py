"""Tool profiles: `core` keeps the list small (every tool's schema costs each agent context on every
turn); `full` adds the admin and project tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from vibe_ensemble.api.mcp.tools import admin, issues, knowledge, leases, mail, team

Profile = Literal["core", "full"]
Tool = Callable[..., Awaitable[Any]]

PROFILES: dict[Profile, tuple[Tool, ...]] = {
    "core": (*team.TOOLS, *issues.TOOLS, *mail.TOOLS, *leases.TOOLS, *knowledge.TOOLS),
}
PROFILES["full"] = (*PROFILES["core"], *admin.TOOLS)


def profile_of(name: str | None) -> Profile:
    """`full` when asked for by name, else `core`."""
    return "full" if name == "full" else "core"


def first_profile(tool_name: str) -> Profile:
    """The smallest profile that offers a tool."""
    core = {fn.__name__ for fn in PROFILES["core"]}
    return "core" if tool_name in core else "full"
