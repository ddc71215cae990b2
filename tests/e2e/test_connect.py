"""`vibe-ensemble connect` against a live server: the config it writes, with the token it keeps,
reaches the server through the official MCP client as the agent; a second run reuses the token and
changes nothing; --dry-run writes nothing; git ignores the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ServerProcess, call, mcp_client, run_cli

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def connect(server: ServerProcess, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    done = run_cli(
        [CLI, "connect", *args, "--dir", str(repo), "--url", server.mcp_url, "--database-url", db],
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done


async def test_connect_claude_code_then_the_agent_works(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)

    dry = connect(server, repo, "claude-code", "--agent", "alice", "--dry-run")
    assert "would write" in dry.stdout and "would create a worker token" in dry.stdout
    assert not (repo / ".mcp.json").exists() and not (repo / ".vibe-ensemble").exists()

    first = connect(server, repo, "claude-code", "--agent", "alice")
    assert "created a worker token for agent 'alice'" in first.stdout
    assert "set -a; . " in first.stdout
    config = json.loads((repo / ".mcp.json").read_text())
    entry = config["mcpServers"]["vibe-ensemble"]
    header = entry["headers"]["Authorization"]
    assert header == "Bearer ${VIBE_ENSEMBLE_TOKEN}"
    env_line = (repo / ".vibe-ensemble" / "token.env").read_text().splitlines()[-1]
    name, _, secret = env_line.partition("=")
    assert name == "VIBE_ENSEMBLE_TOKEN" and secret.startswith("vibe_")
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", ".vibe-ensemble/token.env"])
    assert ignored.returncode == 0  # git ignores the token

    # The client expands ${VIBE_ENSEMBLE_TOKEN}; the agent then acts as alice, and only alice.
    token = header.removeprefix("Bearer ").replace("${VIBE_ENSEMBLE_TOKEN}", secret)
    async with mcp_client(entry["url"], token) as client:
        me = await call(client, "register_agent", name="alice")
        assert me["name"] == "alice"

    before = (repo / ".mcp.json").read_text()
    second = connect(server, repo, "claude-code", "--agent", "alice")
    assert "unchanged" in second.stdout and "reusing the token" in second.stdout
    assert (repo / ".mcp.json").read_text() == before
    assert (repo / ".vibe-ensemble" / "token.env").read_text().splitlines()[-1] == env_line
