"""Claude Code's hook events and answer shapes (https://code.claude.com/docs/en/hooks).

- SessionStart: START, the briefing as `hookSpecificOutput.additionalContext`.
- UserPromptSubmit: PROMPT, unread mail as `additionalContext`.
- PreToolUse on Edit, MultiEdit, Write, NotebookEdit (`tool_input.file_path` or `notebook_path`):
  EDIT, refused with `permissionDecision: "deny"` and a reason naming the holder.
- Stop and SessionEnd: BEAT.

Warnings go in `systemMessage` (shown to the person, not to the model). What the hook does is
hooks/core.py.
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

EDIT_TOOLS = ("Edit", "MultiEdit", "Write", "NotebookEdit")
EDIT_MATCHER = "|".join(EDIT_TOOLS)


def edited(event: dict[str, Any]) -> list[str]:
    if event.get("tool_name") not in EDIT_TOOLS:
        return []
    tool_input = event.get("tool_input")
    if not isinstance(tool_input, dict):
        return []
    raw = tool_input.get("file_path") or tool_input.get("notebook_path")
    return [raw] if isinstance(raw, str) and raw else []


ADAPTER = Adapter(
    client="claude-code",
    title="Claude Code",
    steps={
        "SessionStart": Step.START,
        "UserPromptSubmit": Step.PROMPT,
        "PreToolUse": Step.EDIT,
        "Stop": Step.BEAT,
        "SessionEnd": Step.BEAT,
    },
    edited=edited,
    context=hook_specific_context,
    deny=permission_denied,
    edit_matcher=EDIT_MATCHER,
    warning=system_message,
    project_env="CLAUDE_PROJECT_DIR",
)
