"""`connect` writes each client's config in its documented format, merged with what is there, never
the token itself, and a second run changes nothing (formats: docs/clients/)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from vibe_ensemble.auth.token_file import TOKEN_VAR, read_token, token_in
from vibe_ensemble.cli.clients import CODEX_TOOL_TIMEOUT_S, ConnectError, apply, plan_config, write_token
from vibe_ensemble.cli.common import UrlError, mcp_endpoint
from vibe_ensemble.services.live import MAX_WAIT_S

URL = "http://127.0.0.1:8080/mcp"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("client", "relative", "expected"),
    [
        (
            "claude-code",
            ".mcp.json",
            {"type": "http", "url": URL, "headers": {"Authorization": "Bearer ${VIBE_ENSEMBLE_TOKEN}"}},
        ),
        (
            "gemini",
            ".gemini/settings.json",
            {"httpUrl": URL, "headers": {"Authorization": "Bearer ${VIBE_ENSEMBLE_TOKEN}"}},
        ),
        (
            "cursor",
            ".cursor/mcp.json",
            {"url": URL, "headers": {"Authorization": "Bearer ${env:VIBE_ENSEMBLE_TOKEN}"}},
        ),
    ],
)
def test_json_clients_merge_and_are_idempotent(
    tmp_path: Path, client: str, relative: str, expected: dict[str, object]
) -> None:
    path = tmp_path / relative
    other = {"command": "npx", "args": ["other-server"]}
    write(path, json.dumps({"theme": "dark", "mcpServers": {"other": other}}))
    change = plan_config(client, tmp_path, URL)
    assert change.path == path and change.changed
    apply(change)
    data = json.loads(path.read_text())
    assert data == {"theme": "dark", "mcpServers": {"other": other, "vibe-ensemble": expected}}
    assert "vibe_" not in path.read_text()  # never a token
    again = plan_config(client, tmp_path, URL)
    assert not again.changed
    # A new URL replaces only our entry.
    apply(plan_config(client, tmp_path, "http://127.0.0.1:8090/mcp"))
    assert json.loads(path.read_text())["mcpServers"]["other"] == other


def test_codex_toml_keeps_everything_else_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    original = 'model = "o4"\n\n[mcp_servers.other]\ncommand = "npx"  # keep me\n'
    write(home / "config.toml", original)
    change = plan_config("codex", tmp_path, URL)
    apply(change)
    text = (home / "config.toml").read_text()
    assert text.startswith(original.rstrip("\n"))
    parsed = tomllib.loads(text)
    assert parsed["mcp_servers"]["vibe-ensemble"] == {
        "url": URL,
        "bearer_token_env_var": "VIBE_ENSEMBLE_TOKEN",
        "tool_timeout_sec": 90,
    }
    assert parsed["mcp_servers"]["other"] == {"command": "npx"} and parsed["model"] == "o4"
    assert not plan_config("codex", tmp_path, URL).changed
    # A changed URL rewrites our table in place, once.
    apply(plan_config("codex", tmp_path, "http://h:1/mcp"))
    text = (home / "config.toml").read_text()
    assert text.count("[mcp_servers.vibe-ensemble]") == 1 and "keep me" in text


@pytest.mark.parametrize(
    ("client", "relative"), [("claude-code", ".mcp.json"), ("cursor", ".cursor/mcp.json")]
)
def test_a_broken_config_is_named_and_left_alone(tmp_path: Path, client: str, relative: str) -> None:
    write(tmp_path / relative, "{not json")
    with pytest.raises(ConnectError, match=r"is not valid JSON \(line 1"):
        plan_config(client, tmp_path, URL)
    assert (tmp_path / relative).read_text() == "{not json"


def test_unknown_client_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match="use one of claude-code, codex, gemini, cursor"):
        plan_config("vim", tmp_path, URL)


def test_the_token_file_is_private_and_ignored_by_git(tmp_path: Path) -> None:
    secret = "vibe_" + "s" * 43
    path = write_token(tmp_path, secret, "alice")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".vibe-ensemble" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert read_token(tmp_path) == secret


SECRET = "vibe_" + "R8Wk" * 10 + "abc"


@pytest.mark.parametrize(
    "text",
    [
        SECRET + "\n",  # the token alone
        f"# vibe-ensemble token for agent alice: load with `set -a; . x; set +a`\n{TOKEN_VAR}={SECRET}\n",
        f"\n# a comment\nexport VIBE_ENSEMBLE_TOKEN='{SECRET}'\r\n",
    ],
    ids=["bare", "connect's env file", "exported and quoted"],
)
def test_a_token_file_is_the_token_alone_or_the_env_file_connect_writes(text: str) -> None:
    assert token_in(text) == SECRET


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        f"{SECRET}\n{SECRET}\n",  # two lines: which one?
        "VIBE_ENSEMBLE_TOKEN=not-a-token\n",
        f"VIBE_ENSEMBLE_TOKEN={SECRET} and more\n",  # not a header value
        "password123\n",
    ],
)
def test_anything_else_holds_no_token(text: str) -> None:
    assert token_in(text) is None


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("http://127.0.0.1:8090", "http://127.0.0.1:8090/mcp"),
        ("http://127.0.0.1:8090/", "http://127.0.0.1:8090/mcp"),
        ("http://127.0.0.1:8090/mcp/", "http://127.0.0.1:8090/mcp"),
        (" https://team.example/vibe/mcp ", "https://team.example/vibe/mcp"),
    ],
)
def test_a_server_url_names_its_mcp_endpoint(given: str, endpoint: str) -> None:
    assert mcp_endpoint(given) == endpoint


@pytest.mark.parametrize("given", ["127.0.0.1:8090", "ftp://h/mcp", "http://u:p@h/mcp", "http://h:99999/mcp"])
def test_a_url_that_names_no_server_is_refused(given: str) -> None:
    with pytest.raises(UrlError, match="--url"):
        mcp_endpoint(given)


OLD = "http://old:1/mcp"
OURS = {"url": URL, "bearer_token_env_var": "VIBE_ENSEMBLE_TOKEN", "tool_timeout_sec": 90}


@pytest.mark.parametrize(
    "original",
    [
        f'model = "o4"\n\n[mcp_servers]\nvibe-ensemble = {{ url = "{OLD}", enabled = false }}  # mine\n'
        'other = { command = "npx" }\n',
        f'mcp_servers.vibe-ensemble.url = "{OLD}"\nmcp_servers.vibe-ensemble.enabled = false\n\n[x]\na = 1\n',
        f'[mcp_servers]\nvibe-ensemble.url = "{OLD}"  # mine\nvibe-ensemble.enabled = false\n',
        f'[mcp_servers."vibe-ensemble"]\nurl = "{OLD}"  # mine\nenabled = false\nstartup_timeout_sec = 20\n'
        'tool_timeout_sec = 30\n\n[mcp_servers."vibe-ensemble".http_headers]\nA = "b"\n\n'
        '[profiles.x]\nmodel = "o3"\n',
        "[mcp_servers.vibe-ensemble.http_headers]\nA = 'b'\n",  # only a sub-table: our table is added
        "[mcp_servers.'vibe-ensemble']\nenabled_tools = [\n  'a',  # [not a table]\n  'b',\n]\n"
        "bearer_token_env_var = 'OLD'\nenabled = false",  # no newline at the end
    ],
    ids=[
        "inline table",
        "dotted keys",
        "dotted under [mcp_servers]",
        "table and sub-table",
        "sub-table",
        "arrays",
    ],
)
def test_codex_sets_our_keys_in_any_layout_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, original: str
) -> None:
    """Only url, bearer_token_env_var and tool_timeout_sec change: the person's keys (enabled =
    false), sub-tables, comments and every other line stay; a second run changes nothing."""
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    write(home / "config.toml", original)
    apply(plan_config("codex", tmp_path, URL))
    text = (home / "config.toml").read_text()
    before, after = tomllib.loads(original), tomllib.loads(text)
    assert after["mcp_servers"]["vibe-ensemble"] == {**before["mcp_servers"].get("vibe-ensemble", {}), **OURS}
    assert {**after, "mcp_servers": {}} == {**before, "mcp_servers": {}}
    assert {k: v for k, v in after["mcp_servers"].items() if k != "vibe-ensemble"} == {
        k: v for k, v in before["mcp_servers"].items() if k != "vibe-ensemble"
    }
    lines = iter(text.splitlines())
    for line in original.splitlines():  # every line we own no key of is there, in its order
        if OLD not in line and "'OLD'" not in line and "tool_timeout_sec" not in line:
            assert any(line in candidate for candidate in lines), line
    assert not plan_config("codex", tmp_path, URL).changed


def test_codex_refuses_an_entry_it_cannot_reach_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    original = f'mcp_servers = {{ vibe-ensemble = {{ url = "{OLD}" }} }}\n'
    write(home / "config.toml", original)
    cannot = r"config.toml: cannot set url, bearer_token_env_var, tool_timeout_sec .* safely"
    with pytest.raises(ConnectError, match=cannot):
        plan_config("codex", tmp_path, URL)
    assert (home / "config.toml").read_text() == original


@pytest.mark.parametrize(
    ("kept", "written"),
    [(None, 90), ("30", 90), ("59.5", 90), ('"300"', 90), ("90", 90), ("120", 120), ("600.5", 600.5)],
)
def test_codex_waits_longer_than_the_longest_wait_for_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: str | None, written: float
) -> None:
    """Codex ends a tool call after tool_timeout_sec, 60 s unless set: no longer than the longest
    wait_for_messages (docs/live.md's loop waits 60 s), so an idle agent's wait timed out. connect
    writes 90 s over a smaller value (or none, or one that is no number), and keeps a larger one."""
    assert CODEX_TOOL_TIMEOUT_S >= MAX_WAIT_S + 20
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    timeout = f"tool_timeout_sec = {kept}  # mine\n" if kept is not None else ""
    original = f'[mcp_servers.vibe-ensemble]\nurl = "{OLD}"\n{timeout}enabled = false\n'
    write(home / "config.toml", original)
    apply(plan_config("codex", tmp_path, URL))
    text = (home / "config.toml").read_text()
    entry = tomllib.loads(text)["mcp_servers"]["vibe-ensemble"]
    assert entry == {**OURS, "tool_timeout_sec": written, "enabled": False}
    assert text.count("tool_timeout_sec") == 1 and ("# mine" in text) == (kept is not None)  # in place
    assert not plan_config("codex", tmp_path, URL).changed


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        (  # the bridge's entry, as docs/clients/stdio.md shows it
            f'command = "/x/vibe-ensemble"\nargs = ["mcp", "--url", "{OLD}"]\n'
            'env = { VIBE_TOKEN = "vibe_x" }\n',
            "is a stdio server's entry with command, args, env (a table):",
        ),
        (f'url = "{OLD}"\nenv = {{ VIBE_TOKEN = "vibe_x" }}\n', "has env (a table):"),  # command, args gone
        (f'url = "{OLD}"\n\n[mcp_servers.vibe-ensemble.env]\nVIBE_TOKEN = "vibe_x"\n', "has env (a table):"),
        (f'url = "{OLD}"\nenv_vars = ["VIBE_TOKEN"]\ncwd = "/srv"\n', "has env_vars, cwd:"),
        ('cwd = "/srv"\n', "has cwd:"),
        (f'url = "{OLD}"\nbearer_token = "vibe_x"\n', "has bearer_token:"),
    ],
    ids=["stdio entry", "env", "env table", "env_vars and cwd", "cwd alone", "bearer_token"],
)
def test_codex_refuses_an_entry_holding_keys_codex_refuses_over_http_naming_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, named: str
) -> None:
    """Codex fails to load a Streamable HTTP entry (a url) that has command, args, env, env_vars, cwd
    or bearer_token ("X is not supported for streamable_http"): connect refuses such an entry,
    naming every one of them, and changes nothing, rather than write a config Codex will not load."""
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    original = f'model = "o4"\n\n[mcp_servers.vibe-ensemble]\n{entry}'
    write(home / "config.toml", original)
    with pytest.raises(ConnectError) as refused:
        plan_config("codex", tmp_path, URL)
    message = str(refused.value)
    assert f"mcp_servers.vibe-ensemble in {home / 'config.toml'} {named}" in message, message
    assert "Codex refuses to load one holding any of these; remove them" in message
    assert "vibe_x" not in message
    assert (home / "config.toml").read_text() == original


@pytest.mark.parametrize(
    ("client", "relative", "owned"),
    [
        ("claude-code", ".mcp.json", {"type", "url", "headers"}),
        ("gemini", ".gemini/settings.json", {"httpUrl", "headers"}),
        ("cursor", ".cursor/mcp.json", {"url", "headers"}),
    ],
)
def test_json_clients_keep_the_persons_keys_in_our_entry(
    tmp_path: Path, client: str, relative: str, owned: set[str]
) -> None:
    """A server the person turned off stays off; a header of their own stays."""
    path = tmp_path / relative
    mine = {"disabled": True, "timeout": 30000, "headers": {"X-Team": "a", "Authorization": "Bearer old"}}
    write(path, json.dumps({"mcpServers": {"vibe-ensemble": mine}}))
    apply(plan_config(client, tmp_path, URL))
    entry = json.loads(path.read_text())["mcpServers"]["vibe-ensemble"]
    assert entry["disabled"] is True and entry["timeout"] == 30000
    assert entry["headers"]["X-Team"] == "a" and "${" in entry["headers"]["Authorization"]
    assert set(entry) == owned | {"disabled", "timeout"}
    assert not plan_config(client, tmp_path, URL).changed


def test_a_stdio_entry_becomes_the_http_one_or_is_refused_naming_what_to_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry for the stdio bridge (command, args) beside connect's URL: the client refuses both
    (Codex: "url is not supported for stdio"). JSON clients get the HTTP entry, the person's other
    keys kept; Codex's TOML is refused, unchanged, saying what to remove."""
    path = tmp_path / ".mcp.json"
    stdio = {"command": "/x/vibe-ensemble", "args": ["mcp", "--url", OLD], "env": {"VIBE_TOKEN": "t"}}
    write(path, json.dumps({"mcpServers": {"vibe-ensemble": {**stdio, "disabled": True}}}))
    apply(plan_config("claude-code", tmp_path, URL))
    entry = json.loads(path.read_text())["mcpServers"]["vibe-ensemble"]
    assert "command" not in entry and "args" not in entry
    assert entry["url"] == URL and entry["type"] == "http" and entry["disabled"] is True

    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    original = '[mcp_servers.vibe-ensemble]\ncommand = "/x/vibe-ensemble"\nargs = ["mcp"]\n'
    write(home / "config.toml", original)
    with pytest.raises(ConnectError, match=r"is a stdio server's entry with command, args: .* remove them"):
        plan_config("codex", tmp_path, URL)
    assert (home / "config.toml").read_text() == original


def test_a_link_a_repository_commits_is_never_written_through(tmp_path: Path) -> None:
    """A cloned repository may commit symbolic links: `.mcp.json.tmp -> ~/.bashrc` had connect write
    its merged JSON (the repository's own keys in it) into the person's file; `token.env ->
    docs/notes.txt` put a live token where git would commit it."""
    victim = tmp_path / "victim"
    victim.write_text("the person's own file\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".mcp.json.tmp").symlink_to(victim)  # the temporary name the old code wrote through
    apply(plan_config("claude-code", repo, URL))
    assert victim.read_text() == "the person's own file\n"
    assert json.loads((repo / ".mcp.json").read_text())["mcpServers"]["vibe-ensemble"]["url"] == URL

    linked = tmp_path / "linked"
    for link, kind in ((".mcp.json", "claude-code"), (".cursor", "cursor"), (".gemini", "gemini")):
        linked.mkdir(exist_ok=True)
        (linked / link).symlink_to(victim if link.endswith(".json") else tmp_path)
        with pytest.raises(ConnectError, match=r"is a symbolic link; connect writes nothing through links"):
            plan_config(kind, linked, URL)
        (linked / link).unlink()
    assert victim.read_text() == "the person's own file\n"

    notes = repo / "docs" / "notes.txt"
    write(notes, "notes\n")
    (repo / ".vibe-ensemble").mkdir()
    (repo / ".vibe-ensemble" / "token.env").symlink_to(notes)
    with pytest.raises(ConnectError, match=r"token.env is a symbolic link"):
        write_token(repo, "vibe_" + "A" * 43, "erin")
    assert notes.read_text() == "notes\n"


def test_codex_keeps_crlf_takes_a_url_beyond_ascii_and_refuses_a_file_too_deep_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "codex"
    monkeypatch.setenv("CODEX_HOME", str(home))
    config = home / "config.toml"
    home.mkdir()
    config.write_bytes(b'model = "o3"\r\n\r\n[mcp_servers.vibe-ensemble]\r\nurl = "http://old/mcp"\r\n')
    apply(plan_config("codex", tmp_path, URL))
    written = config.read_bytes()
    assert written.startswith(b'model = "o3"\r\n\r\n[mcp_servers.vibe-ensemble]\r\n'), written  # CRLF kept
    assert tomllib.loads(written.decode())["mcp_servers"]["vibe-ensemble"]["url"] == URL

    unusual = "http://bücher.example/mcp"
    apply(plan_config("codex", tmp_path, unusual))
    assert tomllib.loads(config.read_text())["mcp_servers"]["vibe-ensemble"]["url"] == unusual

    deep = "a = " + "[" * 3000 + "]" * 3000 + "\n"
    config.write_text(deep)
    with pytest.raises(ConnectError, match=r"is not valid TOML \(nested too deeply to read\)"):
        plan_config("codex", tmp_path, URL)
    assert config.read_text() == deep
