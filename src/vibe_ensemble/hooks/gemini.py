"""Gemini CLI's hook events and answer shapes (https://geminicli.com/docs/hooks/reference/).

- SessionStart: START, the briefing as `hookSpecificOutput.additionalContext` (the first turn).
- BeforeAgent (a prompt was submitted): PROMPT, unread mail as `additionalContext` for this turn.
- BeforeTool on `write_file` and `replace` (`tool_input.file_path`): EDIT, refused with
  `decision: "deny"` and a `reason` Gemini CLI sends to the model as the tool's error.
- AfterAgent (the turn is answered) and SessionEnd: BEAT.

Warnings go in `systemMessage`, shown to the person. What the hook does is hooks/core.py.
"""

from __future__ import annotations

from typing import Any

from vibe_ensemble.hooks.core import Adapter, Reply, Step, hook_specific_context, system_message

EDIT_TOOLS = ("write_file", "replace")
EDIT_MATCHER = "|".join(EDIT_TOOLS)


def edited(event: dict[str, Any]) -> list[str]:
    tool_input = event.get("tool_input")
    if event.get("tool_name") not in EDIT_TOOLS or not isinstance(tool_input, dict):
        return []
    raw = tool_input.get("file_path")
    return [raw] if isinstance(raw, str) and raw else []


def deny(reason: str) -> Reply:
    return Reply({"decision": "deny", "reason": reason})


ADAPTER = Adapter(
    client="gemini",
    title="Gemini CLI",
    steps={
        "SessionStart": Step.START,
        "BeforeAgent": Step.PROMPT,
        "BeforeTool": Step.EDIT,
        "AfterAgent": Step.BEAT,
        "SessionEnd": Step.BEAT,
    },
    edited=edited,
    context=hook_specific_context,
    deny=deny,
    edit_matcher=EDIT_MATCHER,
    warning=system_message,
    project_env="GEMINI_PROJECT_DIR",
)
