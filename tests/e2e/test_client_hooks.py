"""The Gemini CLI, Cursor and Codex CLI hooks, run as each client runs them: `connect CLIENT --hooks`
writes them into the client's hooks file, and each command from that file is run through the shell
with the client's documented event JSON on stdin, against a live server (docs/clients/)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.e2e.test_claude_code_hooks import CLI, TOKEN_VAR, agent, bob_leases_app_py_and_writes_to_alice
from tests.support import ServerProcess, run_cli

Event = dict[str, Any]
Out = dict[str, Any] | None


def _hook_context(out: Out) -> str:
    assert out is not None
    return str(out["hookSpecificOutput"]["additionalContext"])


def _patch(*lines: str) -> Event:
    body = "\n".join(["*** Begin Patch", *lines, "*** End Patch"]) + "\n"
    return {"hook_event_name": "PreToolUse", "tool_name": "apply_patch", "tool_input": {"command": body}}


@dataclass(frozen=True)
class Client:
    name: str
    hooks_file: str
    project_env: str | None  # the variable the client sets to the project directory
    base: Callable[[Path], Event]  # the fields every event of this client carries
    start: Event
    prompt: Event
    edit: Callable[[Path], Event]  # an edit of this file
    beats: list[Event]  # events that only say the agent is alive
    context: Callable[[Out], str]  # the model context in an answer
    refusal: Callable[[Out], str]  # the reason of a refused edit
    allowed: Out = None  # the answer to an edit that may go ahead
    prompt_quiet: Out = None  # the answer to a prompt with nothing to add
    prompt_shows_mail: bool = True
    extra_edits: list[tuple[Event, bool]] = field(default_factory=list)  # (event, refused?)


GEMINI = Client(
    "gemini",
    ".gemini/settings.json",
    "GEMINI_PROJECT_DIR",
    lambda repo: {
        "session_id": "s-1",
        "transcript_path": str(repo / "t.json"),
        "cwd": str(repo),
        "timestamp": "2026-11-30T10:00:00Z",
    },
    {"hook_event_name": "SessionStart", "source": "startup"},
    {"hook_event_name": "BeforeAgent", "prompt": "go"},
    lambda path: {
        "hook_event_name": "BeforeTool",
        "tool_name": "write_file",
        "tool_input": {"file_path": str(path), "content": "x"},
    },
    [
        {
            "hook_event_name": "AfterAgent",
            "prompt": "go",
            "prompt_response": "done",
            "stop_hook_active": False,
        },
        {"hook_event_name": "SessionEnd", "reason": "exit"},
    ],
    _hook_context,
    lambda out: out["reason"] if out and out.get("decision") == "deny" else "",
    extra_edits=[
        (
            {
                "hook_event_name": "BeforeTool",
                "tool_name": "replace",
                "tool_input": {"file_path": "src/app.py", "old_string": "a", "new_string": "b"},
            },
            True,
        ),
        (
            {
                "hook_event_name": "BeforeTool",
                "tool_name": "run_shell_command",
                "tool_input": {"command": "ls"},
            },
            False,
        ),
    ],
)

CURSOR = Client(
    "cursor",
    ".cursor/hooks.json",
    "CURSOR_PROJECT_DIR",
    lambda repo: {
        "conversation_id": "c-1",
        "generation_id": "g-1",
        "model": "m",
        "cursor_version": "2.1.0",
        "workspace_roots": [str(repo)],
        "user_email": None,
        "transcript_path": None,
    },
    {
        "hook_event_name": "sessionStart",
        "session_id": "c-1",
        "is_background_agent": False,
        "composer_mode": "agent",
    },
    {"hook_event_name": "beforeSubmitPrompt", "prompt": "go", "attachments": []},
    lambda path: {
        "hook_event_name": "preToolUse",
        "tool_name": "Write",
        "tool_use_id": "t-1",
        "tool_input": {"file_path": str(path), "contents": "x"},
    },
    [
        {"hook_event_name": "stop", "status": "completed", "loop_count": 0},
        {
            "hook_event_name": "sessionEnd",
            "session_id": "c-1",
            "reason": "completed",
            "duration_ms": 10,
            "is_background_agent": False,
            "final_status": "completed",
        },
    ],
    lambda out: out["additional_context"] if out else "",
    lambda out: out["agent_message"] if out and out.get("permission") == "deny" else "",
    allowed={"permission": "allow"},
    prompt_quiet={"continue": True},
    prompt_shows_mail=False,  # Cursor's beforeSubmitPrompt cannot add context
    extra_edits=[
        (
            {"hook_event_name": "preToolUse", "tool_name": "Delete", "tool_input": {"path": "src/app.py"}},
            True,
        ),
        ({"hook_event_name": "preToolUse", "tool_name": "Shell", "tool_input": {"command": "ls"}}, False),
    ],
)

CODEX = Client(
    "codex",
    ".codex/hooks.json",
    None,
    lambda repo: {
        "session_id": "s-1",
        "transcript_path": None,
        "cwd": str(repo),
        "model": "gpt-5-codex",
        "turn_id": "t-1",
        "permission_mode": "default",
    },
    {"hook_event_name": "SessionStart", "source": "startup"},
    {"hook_event_name": "UserPromptSubmit", "prompt": "go"},
    lambda path: _patch(f"*** Update File: {path}", "@@", "-a", "+b"),
    [{"hook_event_name": "Stop", "stop_hook_active": False, "last_assistant_message": "done"}],
    _hook_context,
    lambda out: (out or {}).get("hookSpecificOutput", {}).get("permissionDecisionReason", ""),
    extra_edits=[
        (
            _patch("*** Add File: src/new.py", "+x", "*** Update File: docs/a.md", "*** Move to: src/app.py"),
            True,
        ),
        (_patch("*** Add File: src/new.py", "+x", "*** Delete File: docs/old.md"), False),
        (_patch("  *** Delete File: src/app.py"), True),  # Codex trims a line before reading its marker
        ({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}}, False),
    ],
)


def connect(server: ServerProcess, client: Client, repo: Path, env: dict[str, str], *args: str) -> str:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    argv = [CLI, "connect", client.name, "--agent", "alice", "--hooks", "--dir", str(repo), *args]
    done = run_cli([*argv, "--url", server.mcp_url, "--database-url", db], timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def hook_commands(path: Path, client: str) -> dict[str, str]:
    """Each event's command from the hooks file, as the client would read it (nested or flat)."""
    found: dict[str, str] = {}
    for event, groups in json.loads(path.read_text())["hooks"].items():
        for group in groups if isinstance(groups, list) else []:
            for hook in group.get("hooks", [group]):
                if f"hook {client} " in hook["command"]:
                    found[event] = hook["command"]
    return found


def fire(client: Client, repo: Path, command: str, event: Event, env: dict[str, str]) -> tuple[int, Out, str]:
    project = {client.project_env: str(repo)} if client.project_env else {}
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        input=json.dumps({**client.base(repo), **event}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
        env={**env, **project},
    )
    out = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, out, done.stderr


@pytest.mark.parametrize("client", [GEMINI, CURSOR, CODEX], ids=lambda c: c.name)
def test_client_hooks_brief_show_mail_and_refuse_edits_of_leased_files(
    server: ServerProcess, tmp_path: Path, client: Client
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}  # the token comes from token.env
    env["CODEX_HOME"] = str(tmp_path / "codex-home")  # `connect codex` writes its MCP config there
    dry = connect(server, client, repo, env, "--dry-run")
    assert "would write" in dry and "hook " + client.name in dry
    assert not (repo / client.hooks_file).exists() and not (repo / ".vibe-ensemble").exists()
    first = connect(server, client, repo, env)
    assert "hooks" in first
    path = repo / client.hooks_file
    before = path.read_text()
    assert "already has these hooks; unchanged" in connect(server, client, repo, env)
    assert path.read_text() == before
    commands = hook_commands(path, client.name)
    steps = {client.start["hook_event_name"], client.prompt["hook_event_name"]}
    steps |= {client.edit(repo)["hook_event_name"]} | {b["hook_event_name"] for b in client.beats}
    assert set(commands) == steps

    def run(event: Event) -> tuple[int, Out, str]:
        return fire(client, repo, commands[event["hook_event_name"]], event, env)

    admin = httpx2.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=10
    )
    with admin:
        code, out, err = run(client.start)
        assert code == 0 and err == "", err
        brief = client.context(out)
        assert "agent 'alice' in project 'default'" in brief and "Ready to claim" in brief
        assert agent(admin, "alice")["program"] == client.name

        seen = agent(admin, "alice")["last_seen"]
        assert run(client.prompt) == (0, client.prompt_quiet, "")
        assert agent(admin, "alice")["last_seen"] > seen

        bob_leases_app_py_and_writes_to_alice(admin)
        code, out, _ = run(client.prompt)
        if client.prompt_shows_mail:
            mail = client.context(out)
            assert "1 unread messages" in mail and "from bob" in mail and "````text\n" in mail
        else:
            assert (code, out) == (0, client.prompt_quiet)
            assert "from bob" in client.context(run(client.start)[1])  # the briefing carries it

        code, out, _ = run(client.edit(repo / "src" / "app.py"))
        assert code == 0
        reason = client.refusal(out)
        assert "bob holds 'src/app.py' exclusively" in reason and "refactoring the router" in reason
        assert run(client.edit(repo / "src" / "free.py")) == (0, client.allowed, "")
        assert run(client.edit(Path("/etc/hosts"))) == (0, client.allowed, "")  # not the repository's
        for event, refused in client.extra_edits:
            code, out, _ = run(event)
            assert code == 0 and bool(client.refusal(out)) == refused, (event, out)

        for beat in client.beats:
            seen = agent(admin, "alice")["last_seen"]
            code, out, err = run(beat)
            assert (code, out, err) == (0, None, "")
            assert agent(admin, "alice")["last_seen"] > seen

    server.stop()  # the server gone: the edit goes ahead unchecked, and the client hears why
    code, out, err = run(client.edit(repo / "src" / "app.py"))
    assert code == 0 and not client.refusal(out)
    told = (out or {}).get("systemMessage", "") + err
    assert "cannot reach" in told and "not checked against leases" in told
