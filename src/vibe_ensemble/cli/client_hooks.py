"""`vibe-ensemble connect CLIENT --hooks`: the client's hooks, merged into its hooks config.

Each client keeps hooks in its own file and shape (docs/clients/): Claude Code, Gemini CLI and Codex
as event -> groups `{"matcher", "hooks": [entry]}`, Cursor as event -> flat entries. Every event the
client's adapter handles (hooks/) runs `vibe-ensemble hook CLIENT …`; the edit event only for the
client's file-editing tools. Merging keeps every other key and hook, replaces ours (recognised by
`hook CLIENT` in their command), and a second run changes nothing.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess  # nosec B404
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe_ensemble.cli.clients import Change, ConnectError, read_json_object, refuse_links

TIMEOUT_S = 15


@dataclass(frozen=True)
class HookConfig:
    where: Callable[[Path], Path]  # the project directory -> the client's hooks file
    entry: Callable[[str], dict[str, Any]]  # our command -> one hook entry
    nested: bool  # groups {"matcher", "hooks": [entry]} (else flat entries with their own matcher)
    note: str  # what the person should know about the file
    top: dict[str, Any] = field(default_factory=dict)  # keys the file needs, e.g. Cursor's version
    dir_flag: bool = False  # the client sets no project variable: the command names the directory
    personal: bool = False  # the person's own settings: kept out of git (.git/info/exclude)


def _command_entry(command: str) -> dict[str, Any]:
    return {"type": "command", "command": command, "timeout": TIMEOUT_S}


HOOK_CONFIGS: dict[str, HookConfig] = {
    "claude-code": HookConfig(
        lambda project: project / ".claude" / "settings.local.json",
        _command_entry,
        nested=True,
        note="personal settings, not for committing",
        personal=True,
    ),
    "gemini": HookConfig(
        lambda project: project / ".gemini" / "settings.json",
        # Gemini CLI's timeout is in milliseconds; the name is what /hooks lists
        lambda command: {
            "name": "vibe-ensemble",
            "type": "command",
            "command": command,
            "timeout": TIMEOUT_S * 1000,
        },
        nested=True,
        note="the hook command names this machine's paths",
    ),
    "cursor": HookConfig(
        lambda project: project / ".cursor" / "hooks.json",
        lambda command: {"command": command, "timeout": TIMEOUT_S},
        nested=False,
        note="the hook command names this machine's paths",
        top={"version": 1},
    ),
    "codex": HookConfig(
        lambda project: project / ".codex" / "hooks.json",
        _command_entry,
        nested=True,
        note="Codex runs them once the project is trusted and the hooks reviewed in /hooks",
        dir_flag=True,
    ),
}


def hook_command(client: str, url: str, project: str, agent: str, role: str, directory: Path) -> str:
    """The shell command of our hooks: this installation's `vibe-ensemble` by its absolute path
    (the client's PATH may not have it), with who the agent is; the token stays out of it."""
    script = Path(sys.executable).with_name("vibe-ensemble")
    argv = [str(script)] if script.exists() else [sys.executable, "-I", "-m", "vibe_ensemble.cli"]
    who = [
        "--url",
        url.rstrip("/").removesuffix("/mcp"),
        "--project",
        project,
        "--agent",
        agent,
        "--role",
        role,
    ]
    if HOOK_CONFIGS[client].dir_flag:
        who += ["--dir", str(directory)]
    return shlex.join([*argv, "hook", client, *who])


def wanted(client: str, command: str) -> dict[str, list[dict[str, Any]]]:
    """Each event's hooks for this client: one entry per event, the edit event for edit tools only."""
    from vibe_ensemble.hooks import adapters
    from vibe_ensemble.hooks.core import Step

    adapter, spec = adapters()[client], HOOK_CONFIGS[client]
    matcher = adapter.edit_matcher
    found: dict[str, list[dict[str, Any]]] = {}
    for event, step in adapter.steps.items():
        entry = spec.entry(command)
        scope = {"matcher": matcher} if step is Step.EDIT else {}
        found[event] = [{**scope, "hooks": [entry]}] if spec.nested else [{**entry, **scope}]
    return found


def _ours(group: Any, mark: str) -> bool:
    if not isinstance(group, dict):
        return False
    nested = group.get("hooks")
    entries: list[Any] = nested if isinstance(nested, list) else [group]
    return any(isinstance(h, dict) and mark in f" {h.get('command', '')} " for h in entries)


def plan_hooks(client: str, project: Path, command: str, *, pending: Change | None = None) -> Change:
    """Our hooks merged into the client's hooks file. `pending`: a change planned for the same file
    (Gemini CLI keeps MCP servers and hooks in one settings.json), merged on top of, not clobbered."""
    if client not in HOOK_CONFIGS:
        raise ConnectError(
            f"--hooks: {client!r} has no hooks this command writes; use one of {', '.join(HOOK_CONFIGS)}"
        )
    spec = HOOK_CONFIGS[client]
    path = spec.where(project)
    refuse_links(project, path)
    if pending is not None and pending.path == path:
        before: str | None = pending.after
        data: dict[str, Any] = json.loads(pending.after)
    else:
        before, data = read_json_object(path)
    original = copy.deepcopy(data)
    for key, value in spec.top.items():
        data.setdefault(key, value)
    hooks = data.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise ConnectError(f'"hooks" in {path} must be an object of events')
    mark = f" hook {client} "
    for event, groups in wanted(client, command).items():
        kept = hooks.get(event, [])
        if not isinstance(kept, list):
            raise ConnectError(f'"hooks.{event}" in {path} must be a list')
        hooks[event] = [g for g in kept if not _ours(g, mark)] + groups
    if before is not None and original == data:
        return Change(path, before, before)
    return Change(path, before, json.dumps(data, indent=2) + "\n")


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """`git -C directory ARGS`, or None when git is not installed."""
    try:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell  # nosec B603 B607
            ["git", "-C", str(directory), *args],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None


def exclude_locally(directory: Path, path: Path, *, dry_run: bool) -> tuple[Path, str] | None:
    """Keep `path` (in `directory`) out of `git status`: its pattern in the repository's
    `.git/info/exclude`, which is this clone's own and never committed. The exclude file and the
    pattern, or None when `directory` is not in a git repository or git already ignores the path."""
    relative = path.relative_to(directory).as_posix()
    ignored = _git(directory, "check-ignore", "-q", "--", relative)
    if ignored is None or ignored.returncode != 1:  # 0: ignored already; 128: no repository
        return None
    found = _git(directory, "rev-parse", "--show-toplevel", "--git-path", "info/exclude")
    if found is None or found.returncode != 0:
        return None
    top, exclude = found.stdout.splitlines()
    exclude_file = directory / exclude  # relative to `directory` unless absolute
    pattern = "/" + path.resolve().relative_to(Path(top).resolve()).as_posix()
    if not dry_run:
        text = exclude_file.read_text() if exclude_file.exists() else ""
        exclude_file.parent.mkdir(parents=True, exist_ok=True)
        with exclude_file.open("a") as fh:
            fh.write(("\n" if text and not text.endswith("\n") else "") + pattern + "\n")
    return exclude_file.resolve(), pattern
