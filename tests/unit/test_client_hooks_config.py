"""`connect CLIENT --hooks` merges the client's hooks into its hooks file in the client's documented
shape, keeps everything else, replaces only ours, and a second run changes nothing (docs/clients/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vibe_ensemble.cli.client_hooks import hook_command, plan_hooks
from vibe_ensemble.cli.clients import ConnectError, apply, plan_config

URL = "http://127.0.0.1:8080/mcp"

EXPECTED = {
    # client: (file, {event: edit matcher or None}, nested groups?)
    "claude-code": (
        ".claude/settings.local.json",
        {
            "SessionStart": None,
            "UserPromptSubmit": None,
            "PreToolUse": "Edit|MultiEdit|Write|NotebookEdit",
            "Stop": None,
            "SessionEnd": None,
        },
        True,
    ),
    "gemini": (
        ".gemini/settings.json",
        {
            "SessionStart": None,
            "BeforeAgent": None,
            "BeforeTool": "write_file|replace",
            "AfterAgent": None,
            "SessionEnd": None,
        },
        True,
    ),
    "cursor": (
        ".cursor/hooks.json",
        {
            "sessionStart": None,
            "beforeSubmitPrompt": None,
            "preToolUse": "Write|Delete",
            "stop": None,
            "sessionEnd": None,
        },
        False,
    ),
    "codex": (
        ".codex/hooks.json",
        {"SessionStart": None, "UserPromptSubmit": None, "PreToolUse": "apply_patch", "Stop": None},
        True,
    ),
}


def command(client: str, tmp_path: Path, agent: str = "alice") -> str:
    return hook_command(client, URL, "default", agent, "worker", tmp_path)


@pytest.mark.parametrize("client", list(EXPECTED))
def test_hooks_merge_into_the_clients_file_and_are_idempotent(tmp_path: Path, client: str) -> None:
    relative, events, nested = EXPECTED[client]
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    mine = {"matcher": "Bash", "hooks": [{"type": "command", "command": "echo mine"}]}
    if not nested:
        mine = {"command": "echo mine", "matcher": "Shell"}
    first_event = next(iter(events))
    path.write_text(json.dumps({"theme": "dark", "hooks": {first_event: [mine], "disabled": ["x"]}}))

    change = plan_hooks(client, tmp_path, command(client, tmp_path))
    assert change.path == path and change.changed
    apply(change)
    data = json.loads(path.read_text())
    assert data["theme"] == "dark" and data["hooks"]["disabled"] == ["x"]  # merged, not clobbered
    assert data["hooks"][first_event][0] == mine
    assert set(data["hooks"]) == {*events, "disabled"}
    for event, matcher in events.items():
        ours = data["hooks"][event][-1]
        entry = ours["hooks"][0] if nested else ours
        assert f" hook {client} --url http://127.0.0.1:8080 " in entry["command"]
        assert "--agent alice" in entry["command"] and "vibe_" not in entry["command"]  # no token
        assert ours.get("matcher") == matcher
    assert not plan_hooks(client, tmp_path, command(client, tmp_path)).changed

    # Another agent's command replaces ours; nothing is duplicated.
    apply(plan_hooks(client, tmp_path, command(client, tmp_path, agent="bob")))
    data = json.loads(path.read_text())
    assert data["hooks"][first_event][0] == mine and len(data["hooks"][first_event]) == 2
    assert "--agent bob" in json.dumps(data) and "--agent alice" not in json.dumps(data)


def test_each_clients_entry_shape(tmp_path: Path) -> None:
    def entry(client: str) -> dict[str, object]:
        change = plan_hooks(client, tmp_path, command(client, tmp_path))
        group = json.loads(change.after)["hooks"][next(iter(EXPECTED[client][1]))][0]
        return dict(group["hooks"][0] if "hooks" in group else group)

    assert entry("claude-code")["timeout"] == 15 and entry("codex")["timeout"] == 15  # seconds
    assert entry("gemini")["timeout"] == 15000 and entry("gemini")["name"] == "vibe-ensemble"  # ms
    assert json.loads(plan_hooks("cursor", tmp_path, command("cursor", tmp_path)).after)["version"] == 1
    assert set(entry("cursor")) == {"command", "timeout"}
    # Codex sets no project variable: its command names the repository.
    assert f"--dir {tmp_path}" in str(entry("codex")["command"])
    assert "--dir" not in str(entry("claude-code")["command"])


def test_gemini_hooks_merge_on_top_of_the_mcp_config_in_the_same_file(tmp_path: Path) -> None:
    config = plan_config("gemini", tmp_path, URL)
    hooks = plan_hooks("gemini", tmp_path, command("gemini", tmp_path), pending=config)
    assert hooks.path == config.path and hooks.before == config.after
    apply(config)
    apply(hooks)
    data = json.loads(config.path.read_text())
    assert data["mcpServers"]["vibe-ensemble"]["httpUrl"] == URL and "BeforeTool" in data["hooks"]
    again = plan_hooks(
        "gemini", tmp_path, command("gemini", tmp_path), pending=plan_config("gemini", tmp_path, URL)
    )
    assert not again.changed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"hooks": []}', '"hooks" in'),
        ('{"hooks": {"preToolUse": {}}}', '"hooks.preToolUse" in'),
    ],
)
def test_a_bad_hooks_file_is_named_and_left_alone(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / ".cursor" / "hooks.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ConnectError, match=message) as raised:
        plan_hooks("cursor", tmp_path, command("cursor", tmp_path))
    assert str(path) in str(raised.value)
    assert path.read_text() == text


def test_an_unknown_client_has_no_hooks(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="'vim' has no hooks"):
        plan_hooks("vim", tmp_path, "x")
