"""The commit guard, for real: a git repository, a running server, the installed pre-commit hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from ..support import ServerProcess
from .security_support import auth, make_token


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)


def guard(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vibe_ensemble.cli", "guard", *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    assert git(path, "init", "-q", "-b", "main").returncode == 0
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    assert git(path, "commit", "-q", "-m", "initial").returncode == 0
    return path


def agent_env(server: ServerProcess, token: str, agent: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    return {
        **env,
        "VIBE_URL": server.url,
        "VIBE_TOKEN": token,
        "VIBE_AGENT": agent,
        "VIBE_PROJECT": "default",
    }


def commit(repo: Path, env: dict[str, str], path: str, text: str) -> subprocess.CompletedProcess[str]:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", path)
    return git(repo, "commit", "-q", "-m", f"change {path}", env=env)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture
def team(server: ServerProcess) -> dict[str, str]:
    """Two agents with their own tokens; ann holds src/** exclusively."""
    tokens = {}
    for name in ("ann", "bob"):
        tokens[name] = make_token(server, "worker", project="default", agent=name, tool_profile=None)
        r = httpx2.post(
            server.url + "/api/v1/projects/default/agents", json={"name": name}, headers=auth(tokens[name])
        )
        assert r.status_code == 201, r.text
    r = httpx2.post(
        server.url + "/api/v1/projects/default/reservations",
        json={"paths": ["src/**"], "reason": "refactoring the parser", "ttl_s": 3600},
        headers=auth(tokens["ann"]),
    )
    assert r.status_code == 200 and r.json()["granted"], r.text
    return tokens


def test_guard_refuses_warns_and_chains(server: ServerProcess, repo: Path, team: dict[str, str]) -> None:
    # an existing hook, kept and run first
    hooks = repo / ".git" / "hooks"
    marker = repo.parent / "existing-hook-ran"
    failing = repo.parent / "fail"
    hooks.mkdir(parents=True, exist_ok=True)
    existing = hooks / "pre-commit"
    existing.write_text(f'#!/bin/sh\necho ran >> "{marker}"\n[ ! -e "{failing}" ]\n')
    existing.chmod(0o755)
    original = existing.read_text()
    installed = guard(repo, "install")
    assert installed.returncode == 0, installed.stderr
    assert "runs pre-commit.vibe-chained first" in installed.stderr
    assert (hooks / "pre-commit.vibe-chained").read_text() == original
    assert os.access(existing, os.X_OK) and "vibe-ensemble guard" in existing.read_text()

    bob = agent_env(server, team["bob"], "bob")
    before = head(repo)
    refused = commit(repo, bob, "src/parser.py", "print('mine')\n")
    assert refused.returncode != 0
    assert "commit refused" in refused.stderr
    assert "src/parser.py: held exclusively by ann" in refused.stderr
    assert "'src/**'" in refused.stderr and "refactoring the parser" in refused.stderr
    assert head(repo) == before
    assert marker.read_text() == "ran\n"

    # files nobody holds go through; so do a holder's own files
    git(repo, "reset", "-q")
    assert commit(repo, bob, "docs/notes.md", "notes\n").returncode == 0
    ann = agent_env(server, team["ann"], "ann")
    mine = commit(repo, ann, "src/parser.py", "print('ann')\n")
    assert mine.returncode == 0, mine.stderr
    assert marker.read_text() == "ran\nran\nran\n"

    # a deletion touches the file too
    git(repo, "rm", "-q", "src/parser.py")
    deleted = git(repo, "commit", "-q", "-m", "drop parser", env=bob)
    assert deleted.returncode != 0 and "src/parser.py: held exclusively by ann" in deleted.stderr
    git(repo, "reset", "-q")

    # --warn only warns; installing again does not chain the guard to itself
    assert guard(repo, "install", "--warn").returncode == 0
    assert (hooks / "pre-commit.vibe-chained").read_text() == original
    warned = commit(repo, bob, "src/a.py", "x\n")
    assert warned.returncode == 0, warned.stderr
    assert "warning: this commit touches files others hold" in warned.stderr
    assert "src/a.py: held exclusively by ann" in warned.stderr

    # a failing old hook still stops the commit, even when no lease is in the way
    failing.write_text("")
    assert commit(repo, bob, "docs/b.md", "b\n").returncode != 0


def test_server_down_or_guard_unconfigured_lets_the_commit_through(
    server: ServerProcess, repo: Path, team: dict[str, str]
) -> None:
    assert guard(repo, "install").returncode == 0
    bob = agent_env(server, team["bob"], "bob")
    unconfigured = {k: v for k, v in bob.items() if k != "VIBE_TOKEN"}
    done = commit(repo, unconfigured, "src/a.py", "1\n")
    assert done.returncode == 0 and "not set; not checking leases" in done.stderr
    server.stop()
    down = commit(repo, bob, "src/b.py", "2\n")
    assert down.returncode == 0, down.stderr
    assert "warning: cannot reach" in down.stderr and "committing without the lease check" in down.stderr


def test_the_hook_runs_only_our_code_and_shows_agents_text_literally(
    server: ServerProcess, repo: Path, team: dict[str, str]
) -> None:
    # a module committed to the repository, named like the one the hook runs
    planted = repo.parent / "planted-code-ran"
    for name in ("__init__.py", "cli.py", "__main__.py"):
        path = repo / "vibe_ensemble" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"open({str(planted)!r}, 'a').write('ran')\n")
    git(repo, "add", "vibe_ensemble")
    assert git(repo, "commit", "-q", "-m", "plant").returncode == 0
    assert guard(repo, "install").returncode == 0
    hook = repo / ".git" / "hooks" / "pre-commit"
    assert hook.stat().st_mode & 0o077 == 0  # it may be given VIBE_TOKEN: owner-only

    # a reason with escape sequences is refused at the door (one line, no control characters)...
    lease = {"paths": ["lib/**"], "reason": "\x1b[2J\x1b]0;pwned\x07\nfake: line", "ttl_s": 600}
    url = server.url + "/api/v1/projects/default/reservations"
    r = httpx2.post(url, json=lease, headers=auth(team["ann"]))
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "reason", r.text
    # ...and one with Rich markup is shown as written, never read as markup
    r = httpx2.post(
        url, json={**lease, "reason": "[red]boom[/red] [link=x]y[/link]"}, headers=auth(team["ann"])
    )
    assert r.status_code == 200 and r.json()["granted"], r.text
    refused = commit(repo, agent_env(server, team["bob"], "bob"), "lib/x.py", "x\n")
    assert refused.returncode != 0 and "commit refused" in refused.stderr
    assert not planted.exists()
    assert "[red]boom[/red] [link=x]y[/link]" in refused.stderr


def test_a_commits_files_are_files(server: ServerProcess, repo: Path, team: dict[str, str]) -> None:
    """A lease of every Python file does not hold README.md: the guard asks about files, not about
    patterns that could also be directories (README.md/x.py would be under **/*.py)."""
    r = httpx2.post(
        server.url + "/api/v1/projects/default/reservations",
        json={"paths": ["**/*.py"], "reason": "typing pass", "ttl_s": 3600},
        headers=auth(team["ann"]),
    )
    assert r.status_code == 200 and r.json()["granted"], r.text
    assert guard(repo, "install").returncode == 0
    bob = agent_env(server, team["bob"], "bob")
    passed = commit(repo, bob, "README.md", "hello again\n")
    assert passed.returncode == 0, passed.stderr
    assert commit(repo, bob, "docs/guide.md", "guide\n").returncode == 0
    before = head(repo)
    refused = commit(repo, bob, "lib/util.py", "x = 1\n")
    assert refused.returncode != 0
    # one line a conflict, however long (a hook's stderr is no terminal: nothing wraps it at 80)
    [line] = [x for x in refused.stderr.splitlines() if "lib/util.py" in x]
    assert "held exclusively by ann (lease '**/*.py', until " in line and line.endswith(", typing pass)")
    assert head(repo) == before


def test_the_guard_works_with_what_connect_sets_up(
    server: ServerProcess, repo: Path, team: dict[str, str]
) -> None:
    """The README's setup: `connect` keeps the agent's token in .vibe-ensemble/token.env and clients
    take VIBE_ENSEMBLE_TOKEN; the server prints its MCP URL. The guard takes each of those (it read
    only VIBE_TOKEN and VIBE_URL, and asked …/mcp/api/v1/…: a 404, so it let every commit through)."""
    kept = repo / ".vibe-ensemble"
    kept.mkdir()
    (kept / ".gitignore").write_text("*\n")
    (kept / "token.env").write_text(f"# bob's\nVIBE_ENSEMBLE_TOKEN={team['bob']}\n")
    installed = guard(repo, "install", "--url", server.mcp_url)
    assert installed.returncode == 0, installed.stderr
    assert f"it asks {server.url}" in installed.stderr
    bare = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}  # nothing set by hand

    refused = commit(repo, bare, "src/parser.py", "x\n")  # ann holds src/** exclusively
    assert refused.returncode == 1, refused.stderr
    assert "src/parser.py: held exclusively by ann" in refused.stderr
    git(repo, "reset", "-q")

    # The token from the variable clients use, the server from its MCP URL, overriding the hook's.
    (kept / "token.env").unlink()
    by_env = {**bare, "VIBE_ENSEMBLE_TOKEN": team["bob"], "VIBE_URL": server.mcp_url + "/"}
    refused = commit(repo, by_env, "src/lexer.py", "y\n")
    assert refused.returncode == 1 and "held exclusively by ann" in refused.stderr, refused.stderr
    git(repo, "reset", "-q")
    assert commit(repo, by_env, "docs/notes.md", "z\n").returncode == 0  # nobody holds docs/

    bad = guard(repo, "install", "--url", "http://127.0.0.1:8080/mcp'; rm -rf ~")
    assert bad.returncode == 1 and "not a plain http(s) URL" in bad.stderr
    assert "rm -rf" not in (repo / ".git" / "hooks" / "pre-commit").read_text()


def test_install_with_settings_that_do_not_load_is_one_line_and_installs_nothing(repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    done = subprocess.run(
        [sys.executable, "-m", "vibe_ensemble.cli", "guard", "install", "--repo", str(repo)],
        capture_output=True,
        text=True,
        env={**env, "VIBE_PORT": "abc", "VIBE_SESSION_SECRET": "not-shown-anywhere"},
    )
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert (
        line.startswith("error: cannot read the settings to find the server (port: ") and "give --url" in line
    )
    assert "abc" not in line and "not-shown-anywhere" not in done.stderr + done.stdout
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
