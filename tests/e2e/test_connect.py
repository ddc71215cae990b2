"""`vibe-ensemble connect` against a live server: the config it writes, with the token it keeps,
reaches the server through the official MCP client as the agent; a second run reuses the token and
changes nothing; --dry-run writes nothing; git ignores the token. Another agent in the same directory
is refused unless --force; with no server at the URL the config is written and a warning names it."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

from tests.support import ServerProcess, call, free_port, mcp_client, run_cli

CLI = str(Path(sys.executable).with_name("vibe-ensemble"))


def connect_cli(server: ServerProcess, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    return run_cli(
        [CLI, "connect", *args, "--dir", str(repo), "--url", server.mcp_url, "--database-url", db],
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def connect(server: ServerProcess, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = connect_cli(server, repo, *args)
    assert done.returncode == 0, done.stderr
    return done


def kept_secret(repo: Path) -> str:
    return (repo / ".vibe-ensemble" / "token.env").read_text().splitlines()[-1].partition("=")[2]


async def test_connect_claude_code_then_the_agent_works(server: ServerProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)

    dry = connect(server, repo, "claude-code", "--agent", "alice", "--dry-run")
    assert "would write" in dry.stdout and "would create a worker token" in dry.stdout
    assert not (repo / ".mcp.json").exists() and not (repo / ".vibe-ensemble").exists()

    first = connect(server, repo, "claude-code", "--agent", "alice")
    assert "created a worker token for agent 'alice'" in first.stdout
    assert first.stderr == ""  # the server answers at the URL: no warning
    assert "set -a; . " in first.stdout
    config = json.loads((repo / ".mcp.json").read_text())
    entry = config["mcpServers"]["vibe-ensemble"]
    header = entry["headers"]["Authorization"]
    assert header == "Bearer ${VIBE_ENSEMBLE_TOKEN}"
    env_line = (repo / ".vibe-ensemble" / "token.env").read_text().splitlines()[-1]
    name, _, secret = env_line.partition("=")
    assert name == "VIBE_ENSEMBLE_TOKEN" and secret.startswith("vibe_")
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", ".vibe-ensemble/token.env"])
    assert ignored.returncode == 0  # git ignores the token

    # The client expands ${VIBE_ENSEMBLE_TOKEN}; the agent then acts as alice, and only alice.
    token = header.removeprefix("Bearer ").replace("${VIBE_ENSEMBLE_TOKEN}", secret)
    async with mcp_client(entry["url"], token) as client:
        me = await call(client, "register_agent", name="alice")
        assert me["name"] == "alice"

    before = (repo / ".mcp.json").read_text()
    second = connect(server, repo, "claude-code", "--agent", "alice")
    assert "unchanged" in second.stdout and "reusing the token" in second.stdout
    assert (repo / ".mcp.json").read_text() == before
    assert (repo / ".vibe-ensemble" / "token.env").read_text().splitlines()[-1] == env_line


def test_another_agent_in_the_same_directory_is_refused_unless_forced(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    kept = repo / ".vibe-ensemble" / "token.env"
    connect(server, repo, "claude-code", "--agent", "alice")
    alice = kept.read_text()
    config = (repo / ".mcp.json").read_text()

    for extra in ([], ["--dry-run"]):
        refused = connect_cli(server, repo, "claude-code", "--agent", "bob", *extra)
        assert refused.returncode == 1, refused.stdout
        [line] = refused.stderr.splitlines()
        assert line.startswith(f"error: {kept} already holds the token of agent 'alice' in project 'default'")
        assert "connecting agent 'bob' would replace it" in line and "--force" in line
        assert kept.read_text() == alice and (repo / ".mcp.json").read_text() == config  # nothing written

    forced = connect(server, repo, "claude-code", "--agent", "bob", "--force")
    assert "created a worker token for agent 'bob'" in forced.stdout
    assert "replacing the token kept there" in forced.stdout
    assert "agent bob" in kept.read_text() and kept.read_text() != alice
    # The replaced token was not revoked: alice's holder may still use it.
    for secret in (alice.splitlines()[-1].partition("=")[2], kept_secret(repo)):
        answer = httpx2.get(
            f"{server.url}/api/v1/projects/default/agents",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

    # A kept token the database no longer accepts is not replaced silently either.
    db = ["--database-url", f"sqlite:///{server.data_dir / 'vibe.db'}"]
    tokens = json.loads(run_cli([CLI, "token", "list", "--json", *db]).stdout)
    [bob] = [t for t in tokens if t["agent"] == "bob"]
    assert run_cli([CLI, "token", "revoke", str(bob["id"]), *db]).returncode == 0
    stale = connect_cli(server, repo, "claude-code", "--agent", "bob")
    assert stale.returncode == 1, stale.stdout
    assert "already holds a token the database" in stale.stderr
    assert "does not accept (revoked, expired, or made on another database)" in stale.stderr
    again = connect(server, repo, "claude-code", "--agent", "bob", "--force")
    assert "created a worker token for agent 'bob'" in again.stdout


@contextmanager
def not_vibe_ensemble() -> Iterator[str]:
    """Another HTTP server on a loopback port (every GET is 404); its base URL."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_connect_with_no_server_at_the_url_writes_the_config_and_warns(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'vibe.db'}"
    assert run_cli([CLI, "migrate", "--database-url", db]).returncode == 0
    repo = tmp_path / "repo"
    repo.mkdir()
    port = free_port()  # nothing listens there: the server is not started yet, or runs elsewhere
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    env.update(VIBE_PORT=str(port), VIBE_DATABASE_URL=db, COLUMNS="200")

    # No --url: the URL comes from the settings, and nothing answers there.
    done = run_cli(
        [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo)], env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    url = f"http://127.0.0.1:{port}/mcp"
    assert json.loads((repo / ".mcp.json").read_text())["mcpServers"]["vibe-ensemble"]["url"] == url
    assert "created a worker token for agent 'alice'" in done.stdout
    [warning] = done.stderr.splitlines()
    assert warning.startswith(f"warning: no Vibe Ensemble server answers at http://127.0.0.1:{port}/healthz")
    assert f"The config points the client at {url}" in warning and "run connect again with --url" in warning

    # Something else answers there: not taken for the server either.
    with not_vibe_ensemble() as other:
        argv = [
            CLI,
            "connect",
            "claude-code",
            "--agent",
            "alice",
            "--dir",
            str(repo),
            "--url",
            other + "/mcp",
        ]
        done = run_cli(argv, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reusing the token for agent 'alice'" in done.stdout
    assert f"warning: {other}/healthz answered HTTP 404, not as a Vibe Ensemble server does" in done.stderr


def configured_url(repo: Path) -> str:
    return str(json.loads((repo / ".mcp.json").read_text())["mcpServers"]["vibe-ensemble"]["url"])


def test_the_config_names_the_mcp_endpoint_however_the_url_is_given(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The bridge's rule: a server's address alone means its /mcp; a URL without http(s):// is refused."""
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    for given in (server.url, server.url + "/", server.mcp_url + "/"):
        repo = tmp_path / f"repo-{len(given)}"
        repo.mkdir()
        argv = [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo), "--database-url", db]
        done = run_cli([*argv, "--url", given], timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # the server answers there, and takes the token
        assert configured_url(repo) == server.mcp_url, given

    repo = tmp_path / "refused"
    repo.mkdir()
    no_scheme = server.url.removeprefix("http://")
    argv = [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo), "--database-url", db]
    refused = run_cli([*argv, "--url", no_scheme], timeout=120)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: --url must be an http:// or https:// URL of the server")
    assert list(repo.iterdir()) == []  # nothing written, no token made


def test_a_token_the_server_does_not_accept_is_warned_about_with_the_way_out(
    server: ServerProcess, tmp_path: Path
) -> None:
    """connect made the token in another database than the server's: the config is written, and the
    warning says so, names that database and what to run; doing that, the server accepts it."""
    other = tmp_path / "other.db"
    assert run_cli([CLI, "migrate", "--database-url", f"sqlite:///{other}"]).returncode == 0
    repo = tmp_path / "repo"
    repo.mkdir()
    argv = [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo), "--url", server.mcp_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIBE_")}
    wrong = run_cli([*argv, "--database-url", f"sqlite:///{other}"], env=env, timeout=120)
    assert wrong.returncode == 0, wrong.stderr
    assert configured_url(repo) == server.mcp_url and "created a worker token" in wrong.stdout
    [warning] = wrong.stderr.splitlines()
    assert warning.startswith(f"warning: the server at {server.url} does not accept this token")
    assert f"it was made in the database {other}, not the server's" in warning
    assert "VIBE_DATA_DIR or --database-url, and --force" in warning
    secret = kept_secret(repo)
    assert secret not in warning

    right = run_cli([*argv, "--force"], env={**env, "VIBE_DATA_DIR": str(server.data_dir)}, timeout=120)
    assert right.returncode == 0, right.stderr
    assert right.stderr == ""  # the server takes this one
    assert kept_secret(repo) != secret


def test_a_wrong_path_on_the_servers_port_says_the_mcp_url_ends_in_mcp(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    argv = [CLI, "connect", "claude-code", "--agent", "alice", "--dir", str(repo), "--database-url", db]
    for path in ("/nope", "/api/mcp"):
        done = run_cli([*argv, "--url", server.url + path], timeout=120)
        assert done.returncode == 0, done.stderr
        [warning] = done.stderr.splitlines()
        assert warning == (
            f"warning: a Vibe Ensemble server answers at {server.url}, but not at {server.url}{path}: "
            f"the server's MCP URL ends in /mcp; run connect again with --url {server.mcp_url}"
        )


def test_from_a_subdirectory_connect_writes_at_the_top_of_the_git_repository(
    server: ServerProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    sub = repo / "src" / "app"
    sub.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    db = f"sqlite+aiosqlite:///{server.data_dir / 'vibe.db'}"
    argv = [CLI, "connect", "claude-code", "--url", server.mcp_url, "--database-url", db]

    done = run_cli([*argv, "--agent", "alice"], cwd=sub, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"connecting {repo}: the top level of the git repository around {sub}")
    assert (repo / ".mcp.json").exists() and (repo / ".vibe-ensemble" / "token.env").exists()
    assert not (sub / ".mcp.json").exists() and not (sub / ".vibe-ensemble").exists()

    # An explicit --dir wins; outside a repository the current directory is the one.
    here = run_cli([*argv, "--agent", "bob", "--dir", "."], cwd=sub, timeout=120)
    assert here.returncode == 0, here.stderr
    assert "top level" not in here.stdout and (sub / ".mcp.json").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    outside = run_cli([*argv, "--agent", "carol"], cwd=plain, timeout=120)
    assert outside.returncode == 0, outside.stderr
    assert (plain / ".mcp.json").exists()


def test_the_claude_code_hooks_file_stays_out_of_git_status(server: ServerProcess, tmp_path: Path) -> None:
    """.claude/settings.local.json is personal: listed in the clone's .git/info/exclude (once), unless
    git ignores it already; nothing connect writes there is committed by mistake."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    exclude = repo / ".git" / "info" / "exclude"
    before = exclude.read_text()

    dry = connect(server, repo, "claude-code", "--agent", "alice", "--hooks", "--dry-run")
    assert f"would add /.claude/settings.local.json to {exclude}" in dry.stdout
    assert exclude.read_text() == before
    first = connect(server, repo, "claude-code", "--agent", "alice", "--hooks")
    assert f"added /.claude/settings.local.json to {exclude}, so git ignores it in this clone" in first.stdout
    assert exclude.read_text() == before + "/.claude/settings.local.json\n"
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout.splitlines() == ["?? .mcp.json"]  # the config to commit; no token, no hooks

    again = connect(server, repo, "claude-code", "--agent", "alice", "--hooks")
    assert "added" not in again.stdout and exclude.read_text() == before + "/.claude/settings.local.json\n"

    # Already ignored (here by the repository's .gitignore): the exclude file is left alone.
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / ".gitignore").write_text(".claude/\n")
    kept = (other / ".git" / "info" / "exclude").read_text()
    ignored = connect(server, other, "claude-code", "--agent", "bob", "--hooks")
    assert "exclude" not in ignored.stdout
    assert (other / ".git" / "info" / "exclude").read_text() == kept


def test_a_dry_run_refuses_what_the_real_run_refuses(server: ServerProcess, tmp_path: Path) -> None:
    """--dry-run checks the agent's name and the project as the real run does: same line, same exit
    status, and neither writes a file nor makes a token."""
    repo = tmp_path / "repo"
    repo.mkdir()
    db = ["--database-url", f"sqlite:///{server.data_dir / 'vibe.db'}"]
    tokens_before = run_cli([CLI, "token", "list", "--json", *db]).stdout
    for bad in (["--agent", "bad name!"], ["--agent", "alice", "--project", "nope"]):
        real = connect_cli(server, repo, "cursor", *bad)
        dry = connect_cli(server, repo, "cursor", *bad, "--dry-run")
        assert real.returncode == dry.returncode == 1, dry.stdout
        assert dry.stderr == real.stderr and dry.stderr.startswith("error: ")
        assert "would" not in dry.stdout
    assert list(repo.iterdir()) == []
    assert run_cli([CLI, "token", "list", "--json", *db]).stdout == tokens_before


def test_a_dir_that_does_not_exist_is_refused_and_not_created(server: ServerProcess, tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite:///{server.data_dir / 'vibe.db'}"]
    tokens_before = run_cli([CLI, "token", "list", "--json", *db]).stdout
    missing = tmp_path / "no" / "such"
    a_file = tmp_path / "file"
    a_file.write_text("")
    for given, problem in ((missing, "does not exist"), (a_file, "is not a directory")):
        done = connect_cli(server, given, "cursor", "--agent", "alice")
        assert done.returncode == 1, done.stdout
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: --dir {given}: {problem}")
    assert not (tmp_path / "no").exists()
    assert run_cli([CLI, "token", "list", "--json", *db]).stdout == tokens_before


def test_a_linked_token_file_in_the_repository_is_refused_before_any_token_is_made(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A cloned repository commits `.vibe-ensemble/token.env -> ../docs/notes.txt`: connect put the
    new live token there, where `git add -A` would publish it."""
    db = ["--database-url", f"sqlite:///{server.data_dir / 'vibe.db'}"]
    tokens_before = run_cli([CLI, "token", "list", "--json", *db]).stdout
    repo = tmp_path / "cloned"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "notes.txt").write_text("notes\n")
    (repo / ".vibe-ensemble").mkdir()
    (repo / ".vibe-ensemble" / "token.env").symlink_to(repo / "docs" / "notes.txt")
    done = connect_cli(server, repo, "cursor", "--agent", "alice")
    assert done.returncode == 1, done.stdout
    [line] = done.stderr.splitlines()
    assert "token.env is a symbolic link; connect writes nothing through links" in line
    assert (repo / "docs" / "notes.txt").read_text() == "notes\n"
    assert not (repo / ".cursor").exists()
    assert run_cli([CLI, "token", "list", "--json", *db]).stdout == tokens_before  # no token made


def test_the_login_pages_commands_run_as_written(server: ServerProcess) -> None:
    """The dashboard's login hint shows whole commands: each makes a token that logs in."""
    import html
    import re

    page = httpx2.get(f"{server.url}/login", timeout=30).text
    commands = [html.unescape(c) for c in re.findall(r"<code>(vibe-ensemble token create[^<]*)</code>", page)]
    assert len(commands) == 2, page
    db = ["--database-url", f"sqlite:///{server.data_dir / 'vibe.db'}"]
    for command in commands:
        done = run_cli([CLI, *command.split()[1:], *db])
        assert done.returncode == 0, (command, done.stderr)
        secret = next(word for word in done.stdout.split() if word.startswith("vibe_"))
        answer = httpx2.get(
            f"{server.url}/api/v1/projects", headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
