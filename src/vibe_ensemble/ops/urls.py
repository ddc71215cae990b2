"""The server's base URL from the URL a person gives, for the client-side commands (the hooks, the
commit guard, `connect`'s check): a module of its own, so that a hook, run on every edit an agent
makes, loads no settings machinery for it."""

from __future__ import annotations


def base_url(url: str) -> str:
    """The server's base URL from what a person gives: the base itself or its MCP URL (`…/mcp`, as
    `connect`, the bridge and the server's banner give it); REST lives beside /mcp, not under it."""
    return url.strip().rstrip("/").removesuffix("/mcp")
