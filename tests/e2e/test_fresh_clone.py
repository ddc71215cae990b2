"""The README's first command on a fresh clone, as a new user runs it: nothing started by hand.

`git clone` this checkout's HEAD into a scratch directory, then `make run PORT=…` there (the README's
way to change the port) with a scratch HOME and none of this session's settings: no `VIBE_`
variables, no virtualenv on PATH, no make flags of an outer `make test`. Make creates the clone's own
`.venv`, installs the project into it and serves. The test waits for `/healthz`, reads the one-time
admin token from the first-start banner, runs the banner's `token list` command as printed, makes a
real MCP tool call with the official SDK client and reads its result back over REST, then stops the
server with SIGINT (what Ctrl-C sends) and requires a clean exit of the server and of make.

What it proves: the committed tree (HEAD, not uncommitted edits) has everything `make run` needs;
the Makefile's install, migrate and serve steps work from nothing; the server's defaults (the
per-user data directory, the banner, the port option) hold on a bare HOME; it answers MCP and REST
and stops cleanly.

What it does not prove: that the packages resolve from the public index. pip installs from what the
machine's pip configuration names (its index and `PIP_*` settings are kept, as a user's would be),
which on the development machines and CI is a local mirror; that is also what keeps this test's
cost near 30 s of pip (`make run` installs the server's dependencies only, not the dev extras).
Nor does it cover the PostgreSQL variant (`make run DATABASE_URL=…`), which other tests serve.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from ..support import TOKEN_RE, call, free_port, mcp_client, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout of the project to clone"),
    pytest.mark.skipif(not (shutil.which("git") and shutil.which("make")), reason="needs git and make"),
    pytest.mark.timeout(600),
]


def new_user_env(home: Path) -> dict[str, str]:
    """This machine's environment as a new user's shell has it: no project settings, no active
    virtualenv, no outer make's flags, a HOME of their own."""
    own_bin = str(Path(sys.executable).parent)
    dropped = {"VIRTUAL_ENV", "XDG_DATA_HOME", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIBE_", "PYTEST")) and k not in dropped}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != own_bin)
    env["HOME"] = str(home)
    return env


def processes_under(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every descendant of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent:
                frontier.append(child)
                try:
                    cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                found.append((child, cmdline.decode(errors="replace")))
    return found


def test_make_run_on_a_fresh_clone(tmp_path: Path) -> None:
    clone, home = tmp_path / "vibe-ensemble", tmp_path / "home"
    home.mkdir()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = new_user_env(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "make-run.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        make = subprocess.Popen(
            ["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def served() -> bool:
        if make.poll() is not None:
            raise AssertionError(f"make run exited with {make.returncode}:\n{log_path.read_text()}")
        try:
            return httpx2.get(url + "/healthz", timeout=5).status_code == 200
        except httpx2.HTTPError:
            return False

    try:
        # Creating the virtualenv and installing is most of this: about 30 s on a quiet 2-core machine.
        wait_until(served, timeout=400, what=f"make run to serve on {url}")
        installed_in = time.monotonic() - started
        banner = log_path.read_text()
        token = TOKEN_RE.search(banner)
        assert token, banner
        assert f"database: {home / '.local/share/vibe-ensemble/vibe.db'}" in banner

        # The banner's own command, run as printed from where `make run` started.
        printed = next(line.strip() for line in banner.splitlines() if line.strip().endswith("token list"))
        listing = subprocess.run(
            shlex.split(printed), cwd=clone, env=env, capture_output=True, text=True, timeout=120
        )
        assert listing.returncode == 0, listing.stderr
        assert "admin" in listing.stdout

        async def over_mcp() -> dict[str, object]:
            async with mcp_client(url + "/mcp", token.group(1)) as client:
                issue: dict[str, object] = await call(client, "create_issue", title="from a fresh clone")
                return issue

        issue = asyncio.run(over_mcp())
        rest = httpx2.get(
            f"{url}/api/v1/projects/default/issues/{issue['id']}",
            headers={"Authorization": f"Bearer {token.group(1)}"},
            timeout=30,
        )
        assert rest.status_code == 200, rest.text
        assert rest.json()["issue"]["title"] == "from a fresh clone"

        # Ctrl-C: SIGINT to the server make started; it stops cleanly, so make succeeds too.
        servers = [pid for pid, cmd in processes_under(make.pid) if "vibe-ensemble serve" in cmd]
        assert len(servers) == 1, processes_under(make.pid)
        os.kill(servers[0], signal.SIGINT)
        assert make.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if make.poll() is None:
            for pid, _ in processes_under(make.pid):
                os.kill(pid, signal.SIGKILL)
            make.kill()
            make.wait()
    log = log_path.read_text()
    assert "Traceback" not in log, log
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/healthz", timeout=5)  # the port is released
    untracked = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout
    assert untracked == "", f"make run left files git would commit:\n{untracked}"
    print(f"make run served after {installed_in:.0f} s")  # shown with -s: the cost of the install
