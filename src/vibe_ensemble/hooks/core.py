"""What every client's hook does, whatever the client: one core, a thin adapter per client.

An agent's client (Claude Code, Gemini CLI, Cursor, Codex CLI) runs `vibe-ensemble hook CLIENT` on
its own events, with the event as JSON on stdin. Each client names its events and shapes its answers
its own way; its `Adapter` maps an event to one of four steps and turns the core's answers into the
client's JSON:

- START: a heartbeat (registering the agent if new) and the agent's briefing as context: its
  mail, its issues, what is ready, its expiring leases.
- PROMPT: a heartbeat, and any unread mail as context.
- EDIT: the files the edit would change are checked against other agents' leases; a file another
  agent holds exclusively is refused with a reason naming the holder.
- BEAT: a heartbeat, nothing else.

A heartbeat keeps the status the agent set (`blocked` stays blocked, also back from offline); it
only says it is alive.
The hook never stops work because the server is down or the hook is misconfigured: it answers with
the adapter's warning (shown to the person where the client can) and lets the edit through unchecked.
Everything other agents wrote (subjects, titles, lease reasons) reaches the model fenced as data.
"""

from __future__ import annotations

import enum
import os.path
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe_ensemble.domain.untrusted import UNTRUSTED_NOTE, fence, one_line
from vibe_ensemble.hooks.server import Server, Unreachable


@dataclass
class Reply:
    """What the hook process does: JSON on stdout (or nothing), a line on stderr, an exit code."""

    output: dict[str, Any] | None = None
    code: int = 0
    stderr: str = ""


class Step(enum.Enum):
    START = "start"
    PROMPT = "prompt"
    EDIT = "edit"
    BEAT = "beat"


@dataclass(frozen=True)
class Adapter:
    """One client's events and answer shapes; the logic stays in `handle`."""

    client: str  # the command's name, `hook CLIENT`, and the program an agent registers with
    title: str
    steps: Mapping[str, Step]  # the client's event name -> what the hook does for it
    edited: Callable[[dict[str, Any]], list[str]]  # the raw paths an edit event would change
    context: Callable[[str, str], Reply]  # (event name, text) -> the text as model context
    deny: Callable[[str], Reply]  # a refusal of the edit, with the reason for the model
    warning: Callable[[str, str], Reply]  # (event name, text) -> told to the person, work goes on
    edit_matcher: str  # the client's matcher (its tool names) for the EDIT event's hook
    quiet: Callable[[str], Reply] = field(default=lambda _event: Reply())  # nothing to say
    project_env: str | None = None  # the variable the client sets to the project's directory


def handle(event: dict[str, Any], adapter: Adapter, server: Callable[[], Server], project_dir: Path) -> Reply:
    """Answer one hook event. `server` opens the connection only for events that need one."""
    name = event.get("hook_event_name")
    step = adapter.steps.get(name) if isinstance(name, str) else None
    if step is None or not isinstance(name, str):
        return Reply()  # an event this hook is not for: no opinion
    paths: list[str] = []
    if step is Step.EDIT:
        paths = edited_paths(adapter.edited(event), event, project_dir)
        if not paths:
            return adapter.quiet(name)  # not an edit of the repository's files: leases do not cover it
    try:
        client = server()
    except Unreachable as exc:
        return adapter.warning(name, f"{exc}; the hook does nothing until that is fixed")
    try:
        if step is Step.START:
            return adapter.context(name, briefing(client.heartbeat(), client))
        if step is Step.PROMPT:
            text = mail(client.heartbeat(), client)
            return adapter.context(name, text) if text else adapter.quiet(name)
        if step is Step.EDIT:
            reason = lease_conflicts(paths, client)
            return adapter.deny(reason) if reason else adapter.quiet(name)
        client.heartbeat()
        return adapter.quiet(name)
    except Unreachable as exc:
        skipped = " (edit not checked against leases)" if step is Step.EDIT else ""
        return adapter.warning(name, f"{exc}{skipped}")
    finally:
        client.close()


def event_dir(event: dict[str, Any]) -> str | None:
    """The directory an event says it ran in: `cwd`, else the first workspace root (Cursor)."""
    cwd = event.get("cwd")
    if isinstance(cwd, str) and cwd:
        return cwd
    roots = event.get("workspace_roots")
    if isinstance(roots, list) and roots and isinstance(roots[0], str):
        return roots[0]
    return None


def edited_paths(raw: list[str], event: dict[str, Any], project_dir: Path) -> list[str]:
    """The repository paths among `raw` (relative ones are to the event's directory), deduplicated;
    files outside the repository are left out: leases do not cover them."""
    found: list[str] = []
    for item in raw:
        path = Path(item)
        if not path.is_absolute():
            path = Path(event_dir(event) or project_dir) / path
        try:
            relative = Path(_normal(path)).relative_to(_normal(project_dir)).as_posix()
        except ValueError:
            continue
        if relative != "." and relative not in found:
            found.append(relative)
    return found


def _normal(path: Path) -> str:
    return os.path.normpath(os.path.realpath(path))


def lease_conflicts(paths: list[str], client: Server) -> str | None:
    """Why the edit must wait (other agents' exclusive leases on these paths), or None."""
    held: list[str] = []
    leased: list[str] = []  # the paths that are, not every path of the edit
    for path in paths:
        found = [
            f"{c['holder']} holds {c['pattern']!r} exclusively until {c['expires_at']}"
            + (f" (reason: {one_line(c['reason'], 80)})" if c.get("reason") else "")
            for c in client.conflicts(path)
        ]
        leased += [path] if found else []
        held.extend(found)
    if not held:
        return None
    # The lease's pattern and reason are other agents' words: fenced, under the note that they are data.
    verb = "is" if len(leased) == 1 else "are"
    return (
        f"Vibe Ensemble: {', '.join(leased)} {verb} leased to another agent. Do not edit it now: message the "
        "holder (send_message), work on something else, or wait for the lease to end (check_paths). "
        f"{UNTRUSTED_NOTE}\n{fence(held)}"
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


def mail(beat: dict[str, Any], client: Server) -> str | None:
    """Unread mail as context for the prompt being answered; None when there is none."""
    if not beat["unread_messages"]:
        return None
    inbox = client.unread()
    more = beat["unread_messages"] - len(inbox["items"])
    return (
        f"Vibe Ensemble: you have {beat['unread_messages']} unread messages"
        + (f" ({more} more not shown)" if more > 0 else "")
        + "; read them with fetch_inbox (and acknowledge those that ask for it).\n\n"
        + UNTRUSTED_NOTE
        + "\n\n"
        + fence(map(_message_line, inbox["items"]))
    )


# Answer shapes several clients share (Claude Code's, which Codex and Gemini CLI follow in part).


def hook_specific_context(event: str, text: str) -> Reply:
    return Reply({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}})


def system_message(_event: str, text: str) -> Reply:
    """Shown to the person; the model carries on as if there were no hook."""
    return Reply({"systemMessage": f"vibe-ensemble: {one_line(text, 300)}", "suppressOutput": True})


def permission_denied(reason: str) -> Reply:
    return Reply(
        {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }
    )
