"""Claude Code hooks: presence, the agent's briefing and mail, and a lease check before each edit.

Claude Code runs `vibe-ensemble hook claude-code` for the events it is configured for, with the
event as JSON on stdin (https://code.claude.com/docs/en/hooks). The hook answers by its exit code
and JSON on stdout:

- SessionStart: a heartbeat (registering the agent if new), and the agent's briefing as
  `hookSpecificOutput.additionalContext`: its mail, its issues, what is ready, its expiring leases.
- UserPromptSubmit: a heartbeat, and any unread mail as `additionalContext`.
- PreToolUse (Edit, MultiEdit, Write, NotebookEdit): the file is checked against the leases of
  other agents; one held exclusively by another agent is refused with
  `permissionDecision: "deny"` and a reason naming the holder, so Claude sees why.
- Stop and SessionEnd: a heartbeat.

A heartbeat keeps the agent's status as the agent set it (`blocked` stays blocked); it only says the
agent is alive (an offline agent comes back as idle).

It never stops work because the server is down or the hook is misconfigured: it exits 0 with a
`systemMessage` (shown to the person, not to the model) and lets the edit through unchecked.
Everything other agents wrote (subjects, titles, lease reasons) reaches the model fenced as data.
"""

from __future__ import annotations

import os.path
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibe_ensemble.domain.untrusted import UNTRUSTED_NOTE, fence, one_line
from vibe_ensemble.hooks.server import Server, Unreachable

EDIT_TOOLS = ("Edit", "MultiEdit", "Write", "NotebookEdit")
EDIT_MATCHER = "|".join(EDIT_TOOLS)
EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "Stop", "SessionEnd")


@dataclass
class Reply:
    """What the hook process does: JSON on stdout (or nothing), a line on stderr, an exit code."""

    output: dict[str, Any] | None = None
    code: int = 0
    stderr: str = ""


def context(event: str, text: str) -> Reply:
    return Reply({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}})


def warning(text: str) -> Reply:
    """Shown to the person in Claude Code; the model carries on as if there were no hook."""
    return Reply({"systemMessage": f"vibe-ensemble: {one_line(text, 300)}", "suppressOutput": True})


def handle(event: dict[str, Any], server: Callable[[], Server], project_dir: Path) -> Reply:
    """Answer one hook event. `server` opens the connection only for events that need one."""
    name = event.get("hook_event_name")
    if name not in EVENTS:
        return Reply()  # an event this hook is not for: no opinion
    if name == "PreToolUse" and edited_path(event, project_dir) is None:
        return Reply()  # not an edit, or a file outside the repository: leases do not cover it
    try:
        client = server()
    except Unreachable as exc:
        return warning(f"{exc}; the hook does nothing until that is fixed")
    try:
        if name == "SessionStart":
            return context(name, briefing(client.heartbeat(), client))
        if name == "UserPromptSubmit":
            return mail(client.heartbeat(), client)
        if name == "PreToolUse":
            return check_edit(event, client, project_dir)
        client.heartbeat()
        return Reply()
    except Unreachable as exc:
        skipped = " (edit not checked against leases)" if name == "PreToolUse" else ""
        return warning(f"{exc}{skipped}")
    finally:
        client.close()


def edited_path(event: dict[str, Any], project_dir: Path) -> str | None:
    """The repository path an edit tool is about to change (None: not an edit in the repository)."""
    if event.get("tool_name") not in EDIT_TOOLS:
        return None
    tool_input = event.get("tool_input") or {}
    raw = tool_input.get("file_path") or tool_input.get("notebook_path")
    if not isinstance(raw, str) or not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = Path(event.get("cwd") or project_dir) / path
    try:
        relative = Path(_normal(path)).relative_to(_normal(project_dir))
    except ValueError:
        return None
    return relative.as_posix()


def _normal(path: Path) -> str:
    return os.path.normpath(os.path.realpath(path))


def check_edit(event: dict[str, Any], client: Server, project_dir: Path) -> Reply:
    path = edited_path(event, project_dir)
    assert path is not None  # handle() answered already for anything else
    conflicts = client.conflicts(path)
    if not conflicts:
        return Reply()  # no decision: Claude Code's own permission flow goes on
    held = "; ".join(
        f"{c['holder']} holds {c['pattern']!r} exclusively until {c['expires_at']}"
        + (f" (reason: {one_line(c['reason'], 80)})" if c.get("reason") else "")
        for c in conflicts
    )
    reason = (
        f"Vibe Ensemble: {path} is leased to another agent: {held}. Do not edit it now: message the "
        "holder (send_message), work on something else, or wait for the lease to end (check_paths)."
    )
    return Reply(
        {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }
    )


def _message_line(item: dict[str, Any]) -> str:
    m = item["message"]
    ack = " (ack required)" if m.get("ack_required") else ""
    return f"#{m['id']} {m['importance']} from {m['sender']}{ack}: {one_line(m['subject'])}"


def _issue_line(issue: dict[str, Any]) -> str:
    return f"#{issue['id']} {issue['priority']} {issue['status']}: {one_line(issue['title'])}"


def briefing(beat: dict[str, Any], client: Server) -> str:
    who = client.who
    parts = [
        f"Vibe Ensemble: you are agent {who.agent!r} in project {who.project!r}. The MCP server "
        "`vibe-ensemble` coordinates you with the other agents: claim issues before working on them, "
        "reserve files before editing what others may touch (reserve_paths), and read your mail "
        "(fetch_inbox). Edits to files another agent holds exclusively are refused by this hook.",
        f"Unread mail: {beat['unread_messages']}.",
        UNTRUSTED_NOTE,
    ]
    if beat["urgent_unread"]:
        parts.append(
            f"### Urgent or high-importance unread mail\n{fence(map(_message_line, beat['urgent_unread']))}"
        )
    parts.append(f"### Assigned to you\n{fence(map(_issue_line, beat['assigned_issues']))}")
    parts.append(f"### Ready to claim (best first)\n{fence(map(_issue_line, beat['ready_issues']))}")
    if beat["expiring_reservations"]:
        leases = (f"{r['pattern']} until {r['expires_at']}" for r in beat["expiring_reservations"])
        parts.append(f"### Your leases that expire soon (renew with reserve_paths)\n{fence(leases)}")
    return "\n\n".join(parts)


def mail(beat: dict[str, Any], client: Server) -> Reply:
    """Unread mail as context for the prompt being answered; nothing when there is none."""
    if not beat["unread_messages"]:
        return Reply()
    inbox = client.unread()
    more = beat["unread_messages"] - len(inbox["items"])
    text = (
        f"Vibe Ensemble: you have {beat['unread_messages']} unread messages"
        + (f" ({more} more not shown)" if more > 0 else "")
        + "; read them with fetch_inbox (and acknowledge those that ask for it).\n\n"
        + UNTRUSTED_NOTE
        + "\n\n"
        + fence(map(_message_line, inbox["items"]))
    )
    return context("UserPromptSubmit", text)
