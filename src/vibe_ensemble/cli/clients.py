"""`vibe-ensemble connect CLIENT`: give an agent a token and write its client's MCP config.

The token never goes into a config file: every config names the environment variable
`VIBE_ENSEMBLE_TOKEN`, and the secret is kept in `.vibe-ensemble/token.env` beside the configs, a
directory that git ignores by itself. Configs are merged: only our server's entry is written, every
other key is kept, and a second run changes nothing. The formats and places are those each
client documents (docs/clients/).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibe_ensemble.auth.token_file import LOCAL_DIR, TOKEN_FILE, TOKEN_VAR
from vibe_ensemble.cli import toml_entry

SERVER_NAME = "vibe-ensemble"


class ConnectError(Exception):
    """An expected failure; the message says what is wrong and changes nothing."""


@dataclass(frozen=True)
class Change:
    path: Path
    before: str | None  # None: the file does not exist yet
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _bearer(reference: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {reference}"}


def claude_code_entry(url: str) -> dict[str, Any]:
    # .mcp.json expands ${VAR} in url and headers.
    return {"type": "http", "url": url, "headers": _bearer("${" + TOKEN_VAR + "}")}


def gemini_entry(url: str) -> dict[str, Any]:
    # httpUrl is Streamable HTTP (url would mean SSE); settings.json expands $VAR and ${VAR}.
    return {"httpUrl": url, "headers": _bearer("${" + TOKEN_VAR + "}")}


def cursor_entry(url: str) -> dict[str, Any]:
    # Cursor interpolates ${env:NAME} in url and headers.
    return {"url": url, "headers": _bearer("${env:" + TOKEN_VAR + "}")}


def read_json_object(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The file's text (None when missing) and the JSON object it holds ({} when missing or empty)."""
    before = path.read_text() if path.exists() else None
    data: Any = {}
    if before is not None and before.strip():
        try:
            data = json.loads(before)
        except json.JSONDecodeError as exc:
            raise ConnectError(
                f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix it, then run again"
            ) from None
        if not isinstance(data, dict):
            raise ConnectError(f"{path} must hold a JSON object; it holds {type(data).__name__}")
    return before, data


# A stdio server's transport (the bridge, `vibe-ensemble mcp`, docs/clients/stdio.md): the entry
# connect writes is an HTTP one, and a client refuses an entry with both (Codex: "url is not
# supported for stdio"), so these go when connect writes its URL.
STDIO_KEYS = ("command", "args", "cwd")


def _merge_entry(kept: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Our entry over the one in the file: the keys connect owns are set, the person's other keys
    (`"disabled": true`, a header of their own) are kept; a stdio entry's command and arguments
    are replaced by our URL."""
    kept = {key: value for key, value in kept.items() if key not in STDIO_KEYS}
    merged = {**kept, **ours}
    if isinstance(kept.get("headers"), dict) and isinstance(ours.get("headers"), dict):
        merged["headers"] = {**kept["headers"], **ours["headers"]}
    return merged


def _merge_json(path: Path, key: str, entry: dict[str, Any]) -> Change:
    before, data = read_json_object(path)
    servers = data.setdefault(key, {})
    if not isinstance(servers, dict):
        raise ConnectError(f'"{key}" in {path} must be an object of servers')
    kept = servers.get(SERVER_NAME, {})
    if not isinstance(kept, dict):
        raise ConnectError(f'"{key}.{SERVER_NAME}" in {path} must be an object (a server\'s settings)')
    merged = _merge_entry(kept, entry)
    if kept == merged and before is not None:
        return Change(path, before, before)
    servers[SERVER_NAME] = merged
    return Change(path, before, json.dumps(data, indent=2) + "\n")


def codex_values(url: str) -> dict[str, str]:
    """The keys of our Codex entry that connect owns; any other key there is the person's."""
    return {"url": url, "bearer_token_env_var": TOKEN_VAR}


def _merge_codex(path: Path, url: str) -> Change:
    """Set our entry's `url` and `bearer_token_env_var` where the file has them (a table, its dotted
    keys or an inline table), add the ones missing beside them, or append our table; every other
    byte of the file stays as it was. The result is parsed again and must hold exactly what the file
    held with those two keys set: otherwise connect refuses, naming the file, and writes nothing."""
    before = path.read_text() if path.exists() else None
    text = before or ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConnectError(f"{path} is not valid TOML ({exc}); fix it, then run again") from None
    servers = data.get("mcp_servers", {})
    if not isinstance(servers, dict):
        raise ConnectError(f"mcp_servers in {path} must be a table of servers; fix it, then run again")
    entry = servers.get(SERVER_NAME)
    if entry is not None and not isinstance(entry, dict):
        raise ConnectError(f"mcp_servers.{SERVER_NAME} in {path} must be a table; fix it, then run again")
    if entry is not None and any(key in entry for key in STDIO_KEYS):
        raise ConnectError(
            f"mcp_servers.{SERVER_NAME} in {path} is a stdio server (it has a command): connect writes "
            f"an HTTP one, and Codex refuses an entry with both; remove its command and args (or the "
            "whole entry), then run again (the file is unchanged)"
        )
    owned = codex_values(url)
    if entry is not None and all(entry.get(key) == value for key, value in owned.items()):
        return Change(path, before, text)
    expected = {**data, "mcp_servers": {**servers, SERVER_NAME: {**(entry or {}), **owned}}}
    try:
        after = toml_entry.set_keys(text, ["mcp_servers", SERVER_NAME], owned)
        merged = tomllib.loads(after)
    except (toml_entry.Unmergeable, tomllib.TOMLDecodeError, ValueError, IndexError) as exc:
        merged, why = None, str(exc) if isinstance(exc, toml_entry.Unmergeable) else ""
    else:
        why = ""
    if merged != expected:
        raise ConnectError(
            f"{path}: cannot set url and bearer_token_env_var in its mcp_servers.{SERVER_NAME} entry "
            f"safely{f' ({why})' if why else ''}; write the entry as a [mcp_servers.{SERVER_NAME}] table, "
            "then run again (the file is unchanged)"
        )
    return Change(path, before, after)


def codex_home() -> Path:
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")


@dataclass(frozen=True)
class Client:
    name: str
    title: str
    where: Callable[[Path], Path]  # the project directory -> the config file
    merge: Callable[[Path, str], Change]


CLIENTS: dict[str, Client] = {
    "claude-code": Client(
        "claude-code",
        "Claude Code",
        lambda project: project / ".mcp.json",
        lambda path, url: _merge_json(path, "mcpServers", claude_code_entry(url)),
    ),
    "codex": Client(
        "codex",
        "Codex CLI",
        lambda project: codex_home() / "config.toml",
        _merge_codex,
    ),
    "gemini": Client(
        "gemini",
        "Gemini CLI",
        lambda project: project / ".gemini" / "settings.json",
        lambda path, url: _merge_json(path, "mcpServers", gemini_entry(url)),
    ),
    "cursor": Client(
        "cursor",
        "Cursor",
        lambda project: project / ".cursor" / "mcp.json",
        lambda path, url: _merge_json(path, "mcpServers", cursor_entry(url)),
    ),
}


def plan_config(client: str, project: Path, url: str) -> Change:
    try:
        spec = CLIENTS[client]
    except KeyError:
        raise ConnectError(f"unknown client {client!r}: use one of {', '.join(CLIENTS)}") from None
    return spec.merge(spec.where(project), url)


def write_token(project: Path, secret: str, agent: str) -> Path:
    """Keep the secret in a file git ignores (the directory ignores itself), readable by its owner only."""
    directory = project / LOCAL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Local secrets of vibe-ensemble connect: never commit.\n*\n")
    path = directory / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# vibe-ensemble token for agent {agent}: load with `set -a; . {path}; set +a`\n")
        fh.write(f"{TOKEN_VAR}={secret}\n")
    path.chmod(0o600)
    return path


def apply(change: Change) -> None:
    if not change.changed:
        return
    change.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = change.path.with_name(change.path.name + ".tmp")
    tmp.write_text(change.after)
    tmp.replace(change.path)
