"""Codex CLI's hook events and answer shapes (https://developers.openai.com/codex/hooks).

- SessionStart: START, the briefing as `hookSpecificOutput.additionalContext`.
- UserPromptSubmit: PROMPT, unread mail as `additionalContext`.
- PreToolUse on `apply_patch`, Codex's file edit tool: the patch (`tool_input.command`) names its
  files in `*** Add File:`, `*** Update File:`, `*** Delete File:` and `*** Move to:` lines; EDIT
  checks them all and refuses with `permissionDecision: "deny"` and a reason naming the holder.
- Stop (a turn ends): BEAT. Codex has no session-end event.

Warnings go in `systemMessage`. Codex sets no project variable: the directory is `--dir`, else the
event's `cwd`. What the hook does is hooks/core.py.
"""

from __future__ import annotations

from typing import Any

from vibe_ensemble.hooks.core import (
    Adapter,
    Step,
    hook_specific_context,
    permission_denied,
    system_message,
)

EDIT_MATCHER = "apply_patch"
_FILE_LINES = ("*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:")


def edited(event: dict[str, Any]) -> list[str]:
    tool_input = event.get("tool_input")
    if event.get("tool_name") != "apply_patch" or not isinstance(tool_input, dict):
        return []
    patch = tool_input.get("command")
    if not isinstance(patch, str):
        return []
    found: list[str] = []
    for line in patch.splitlines():
        line = line.strip()  # Codex's parser trims a line before it looks for these markers
        for marker in _FILE_LINES:
            if line.startswith(marker) and line[len(marker) :].strip():
                found.append(line[len(marker) :].strip())
    return found


ADAPTER = Adapter(
    client="codex",
    title="Codex CLI",
    steps={
        "SessionStart": Step.START,
        "UserPromptSubmit": Step.PROMPT,
        "PreToolUse": Step.EDIT,
        "Stop": Step.BEAT,
    },
    edited=edited,
    context=hook_specific_context,
    deny=permission_denied,
    edit_matcher=EDIT_MATCHER,
    warning=system_message,
)
