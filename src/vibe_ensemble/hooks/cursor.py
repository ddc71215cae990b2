"""Cursor's hook events and answer shapes (https://cursor.com/docs/hooks).

- sessionStart: START, the briefing as `additional_context` (the conversation's initial context).
- beforeSubmitPrompt: BEAT. Cursor lets this hook allow or block the prompt but not add context,
  so unread mail reaches the agent in the session-start briefing only; the hook answers
  `continue: true`.
- preToolUse on `Write` and `Delete` (`tool_input.file_path`, else `path`): EDIT, refused with
  `permission: "deny"` and the reason as `agent_message` and `user_message`; otherwise
  `permission: "allow"`.
- stop and sessionEnd: BEAT.

Cursor shows no hook message to the person outside a refusal: warnings go to stderr (Cursor's Hooks
output channel) and the answer is the event's usual one. What the hook does is hooks/core.py.
"""

from __future__ import annotations

from typing import Any

from vibe_ensemble.domain.untrusted import one_line
from vibe_ensemble.hooks.core import Adapter, Reply, Step

EDIT_TOOLS = ("Write", "Delete")
EDIT_MATCHER = "|".join(EDIT_TOOLS)


def edited(event: dict[str, Any]) -> list[str]:
    tool_input = event.get("tool_input")
    if event.get("tool_name") not in EDIT_TOOLS or not isinstance(tool_input, dict):
        return []
    raw = tool_input.get("file_path") or tool_input.get("path")
    return [raw] if isinstance(raw, str) and raw else []


def quiet(event: str) -> Reply:
    if event == "preToolUse":
        return Reply({"permission": "allow"})
    if event == "beforeSubmitPrompt":
        return Reply({"continue": True})
    return Reply()


def context(_event: str, text: str) -> Reply:
    return Reply({"additional_context": text})


def deny(reason: str) -> Reply:
    return Reply({"permission": "deny", "user_message": reason, "agent_message": reason})


def warning(event: str, text: str) -> Reply:
    reply = quiet(event)
    reply.stderr = f"vibe-ensemble: {one_line(text, 300)}"
    return reply


ADAPTER = Adapter(
    client="cursor",
    title="Cursor",
    steps={
        "sessionStart": Step.START,
        "beforeSubmitPrompt": Step.BEAT,
        "preToolUse": Step.EDIT,
        "stop": Step.BEAT,
        "sessionEnd": Step.BEAT,
    },
    edited=edited,
    context=context,
    deny=deny,
    edit_matcher=EDIT_MATCHER,
    warning=warning,
    quiet=quiet,
    project_env="CURSOR_PROJECT_DIR",
)
