"""Agent-client hooks: what an agent's client runs on its own events (claude_code.py), talking to
the server with the agent's token (server.py). The command, `vibe-ensemble hook …`, is cli/hook.py."""
