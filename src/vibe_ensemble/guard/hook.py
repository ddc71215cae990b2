"""The commit guard: a git pre-commit hook that refuses commits touching files another agent holds.

`vibe-ensemble guard install` writes a small shell hook that runs any hook it replaced first
and then `vibe-ensemble guard check`. The check asks the server (REST,
`POST /api/v1/projects/{project}/reservations/check`) whether another agent holds any staged
path exclusively. The hook learns who it is from the environment:

    VIBE_URL      the server, e.g. http://127.0.0.1:8080 (its MCP URL, …/mcp, is taken too);
                  default: the URL given to `guard install --url`, written into the hook
    VIBE_TOKEN    an API token (the agent's own, ideally); else VIBE_ENSEMBLE_TOKEN, else the
                  token `vibe-ensemble connect` keeps in the repository's .vibe-ensemble/token.env
    VIBE_AGENT    the committing agent: its own leases never block it (an agent's token names it)
    VIBE_PROJECT  the project slug (default: "default")

When the guard is not configured or the server cannot be reached it warns and lets the commit
through: it guards against collisions, it must never stop work because the server is down.
"""

from __future__ import annotations

import re
import stat
import subprocess  # nosec B404
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from vibe_ensemble.auth.token_file import TOKEN_VAR, read_token
from vibe_ensemble.domain.globs import escape
from vibe_ensemble.ops.urls import base_url

MARK = "# vibe-ensemble guard"
CHAINED = "pre-commit.vibe-chained"
BATCH = 1000
TIMEOUT_S = 5.0


class GuardError(Exception):
    """The guard cannot be installed or run as asked; the message says why."""


class Unavailable(Exception):
    """The server could not answer the check; the commit goes through with a warning."""


@dataclass
class Installed:
    hook: Path
    chained: Path | None  # the hook that was there before, now run first


@dataclass
class Outcome:
    code: int  # the hook's exit status: 1 refuses the commit
    lines: list[str]  # what to tell the committer


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell  # nosec B603 B607
            ["git", "-C", str(repo), *args],  # noqa: S607 - git from PATH, as git hooks are
            capture_output=True,
            text=True,
            check=True,
        )
    except FileNotFoundError:
        raise GuardError("git is not installed or not on PATH") from None
    except subprocess.CalledProcessError as exc:
        raise GuardError(f"git {' '.join(args)} failed in {repo}: {exc.stderr.strip()}") from None
    return done.stdout


def hooks_dir(repo: Path) -> Path:
    """Where git looks for hooks in `repo` (honours core.hooksPath and worktrees)."""
    path = Path(_git(repo, "rev-parse", "--git-path", "hooks").strip())
    return path if path.is_absolute() else (repo / path).resolve()


_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]/_~%-]+")  # nothing a shell would read in quotes


def hook_script(python: str, *, warn: bool, url: str | None = None) -> str:
    # -I (isolated): neither the repository (the hook's working directory) nor PYTHON* variables
    # reach the import path, so a module committed to the repository can never run as the guard
    check = f'"{python}" -I -m vibe_ensemble.cli guard check' + (" --warn" if warn else "")
    if url is not None and not _SAFE_URL.fullmatch(url):
        raise GuardError(f"--url {url!r} is not a plain http(s) URL (letters, digits, . : / _ ~ % - only)")
    default = "" if url is None else f'VIBE_URL="${{VIBE_URL:-{url}}}"; export VIBE_URL\n'
    return f"""#!/bin/sh
{MARK}: refuses commits that touch files another agent holds exclusively.
# Installed by `vibe-ensemble guard install`; configure with VIBE_URL, VIBE_TOKEN, VIBE_AGENT, VIBE_PROJECT.
{default}hooks=$(dirname "$0")
if [ -x "$hooks/{CHAINED}" ]; then
  "$hooks/{CHAINED}" "$@" || exit $?
fi
exec {check}
"""


def install(repo: Path, *, warn: bool = False, python: str, url: str | None = None) -> Installed:
    """Install (or update) the pre-commit hook in `repo`, keeping an existing hook as a chained one;
    with `url`, the hook asks that server unless VIBE_URL names another."""
    script = hook_script(python, warn=warn, url=url)  # a bad URL is refused before anything moves
    hooks = hooks_dir(repo)
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "pre-commit"
    chained = hooks / CHAINED
    if hook.exists() and MARK not in hook.read_text(errors="replace"):
        if chained.exists():
            raise GuardError(
                f"{hook} is not the guard's and {chained} already exists: "
                "merge them by hand, then run guard install again"
            )
        hook.rename(chained)
        chained.chmod(chained.stat().st_mode | stat.S_IXUSR)
    # owner-only: people add VIBE_TOKEN to hooks, and a token must not be world-readable
    hook.write_text(script)
    hook.chmod(0o700)
    return Installed(hook=hook, chained=chained if chained.exists() else None)


def staged_paths(repo: Path) -> list[str]:
    """The repository paths the commit being made touches (added, changed, deleted, both sides of renames)."""
    out = _git(repo, "diff", "--cached", "--name-only", "--no-renames", "-z")
    return [p for p in out.split("\0") if p]


def ask_server(
    url: str,
    token: str,
    project: str,
    agent: str | None,
    paths: list[str],
    *,
    timeout: float = TIMEOUT_S,
    report: bool = False,
) -> list[dict[str, Any]]:
    """The exclusive leases of others that cover `paths` (raises Unavailable when the server cannot say).

    `report`: ask the server to record the conflicts as a refused commit (the dashboard shows them).
    """
    endpoint = f"{url.rstrip('/')}/api/v1/projects/{project}/reservations/check"
    conflicts: list[dict[str, Any]] = []
    try:
        with httpx2.Client(timeout=timeout, headers={"Authorization": f"Bearer {token}"}) as client:
            for start in range(0, len(paths), BATCH):
                batch = paths[start : start + BATCH]
                body = {
                    "paths": [escape(p) for p in batch],
                    "exclusive": False,
                    "agent": agent,
                    "report": report,
                    "files": True,  # a commit's paths are files: README.md is not under **/*.py
                }
                r = client.post(endpoint, json=body)
                if r.status_code != 200:
                    raise Unavailable(f"the server answered {r.status_code}: {_message(r)}")
                literal = dict(zip((escape(p) for p in batch), batch, strict=True))
                for c in r.json()["conflicts"]:
                    conflicts.append({**c, "path": literal.get(c["path"], c["path"])})
    except httpx2.HTTPError as exc:
        raise Unavailable(f"cannot reach {url}: {exc}") from None
    return conflicts


def _message(response: httpx2.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:200]


def find_token(repo: Path, env: Mapping[str, str]) -> str | None:
    """VIBE_TOKEN, else VIBE_ENSEMBLE_TOKEN (what `connect` configures clients with), else the token
    `connect` keeps at the top of the repository."""
    token = env.get("VIBE_TOKEN") or env.get(TOKEN_VAR)
    if token:
        return token
    return read_token(Path(_git(repo, "rev-parse", "--show-toplevel").strip()))


def check(repo: Path, env: Mapping[str, str], *, warn: bool = False) -> Outcome:
    """Decide on the staged commit in `repo`."""
    url, token = base_url(env.get("VIBE_URL", "")), find_token(repo, env)
    missing = [name for name, value in (("VIBE_URL", url), ("VIBE_TOKEN", token)) if not value]
    if missing or token is None:
        return Outcome(
            0,
            [
                f"vibe-ensemble guard: {' and '.join(missing)} not set; not checking leases "
                "(the token may also come from VIBE_ENSEMBLE_TOKEN or .vibe-ensemble/token.env, "
                "the URL from `guard install --url`)."
            ],
        )
    paths = staged_paths(repo)
    if not paths:
        return Outcome(0, [])
    project = env.get("VIBE_PROJECT") or "default"
    agent = env.get("VIBE_AGENT") or None
    try:
        conflicts = ask_server(url, token, project, agent, paths, report=not warn)
    except Unavailable as exc:
        return Outcome(0, [f"vibe-ensemble guard: warning: {exc}; committing without the lease check."])
    if not conflicts:
        return Outcome(0, [])
    lines = [
        f"  {c['path']}: held exclusively by {c['holder']} (lease {c['pattern']!r}, "
        f"until {c['expires_at']}{', ' + c['reason'] if c['reason'] else ''})"
        for c in conflicts
    ]
    if warn:
        return Outcome(0, ["vibe-ensemble guard: warning: this commit touches files others hold:", *lines])
    return Outcome(
        1,
        [
            "vibe-ensemble guard: commit refused: it touches files another agent holds exclusively:",
            *lines,
            "Ask the holder (send_message), wait for the lease to end, or unstage those files. "
            "To commit anyway: git commit --no-verify.",
        ],
    )
