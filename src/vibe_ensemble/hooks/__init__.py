"""Agent-client hooks: what an agent's client runs on its own events. core.py is what the hook
does for any client; claude_code.py, gemini.py, cursor.py and codex.py map each client's events and
answer shapes onto it; server.py talks to the server with the agent's token. The command,
`vibe-ensemble hook CLIENT`, is cli/hook.py."""

from __future__ import annotations

from vibe_ensemble.hooks.core import Adapter


def adapters() -> dict[str, Adapter]:
    """Every client with hooks, by the name `hook CLIENT` and `connect CLIENT --hooks` take."""
    from vibe_ensemble.hooks import claude_code, codex, cursor, gemini

    return {a.client: a for a in (claude_code.ADAPTER, gemini.ADAPTER, cursor.ADAPTER, codex.ADAPTER)}
