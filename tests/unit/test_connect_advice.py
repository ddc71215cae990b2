"""What connect says about committing the files it wrote is true for each client, with and without
--hooks: the MCP config names the token's variable (safe to commit), a hook command names this
machine's paths and the agent (personal), and Codex's config is the person's own, outside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibe_ensemble.cli.client_hooks import HOOK_CONFIGS
from vibe_ensemble.cli.clients import CLIENTS
from vibe_ensemble.cli.connect import commit_advice


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("hooks", [False, True])
def test_the_commit_advice_is_true_for_each_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str, hooks: bool
) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    repo = tmp_path / "repo"
    config = CLIENTS[client].where(repo)
    hook_file = HOOK_CONFIGS[client].where(repo) if hooks else None
    lines = commit_advice(client, repo, config, hook_file, "alice").splitlines()
    personal = hook_file == config or (hook_file is not None and not HOOK_CONFIGS[client].personal)
    said_safe = [line for line in lines if "safe to commit" in line]
    if client == "codex":
        assert lines[0] == (
            f"{config} names $VIBE_ENSEMBLE_TOKEN, never the token; it is your own Codex CLI config, "
            "not the repository's"
        )
    elif hook_file == config:  # gemini --hooks: one file holds both
        assert said_safe == [] and "agent 'alice': it is personal" in lines[0]
    else:
        assert said_safe == [
            f"{config.relative_to(repo)} names $VIBE_ENSEMBLE_TOKEN, never the token, so it is safe to commit"
        ]
    if hook_file is not None and hook_file != config:
        [about] = [line for line in lines if line.startswith(str(hook_file.relative_to(repo)))]
        assert ("it is personal" in about) == personal
        assert "personal" in about and "safe to commit" not in about
