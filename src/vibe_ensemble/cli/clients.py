"""`vibe-ensemble connect CLIENT`: give an agent a token and write its client's MCP config.

The token never goes into a config file: every config names the environment variable
`VIBE_ENSEMBLE_TOKEN`, and the secret is kept in `.vibe-ensemble/token.env` beside the configs, a
directory that git ignores by itself. Configs are merged: only our server's entry is written, every
other key is kept, and a second run changes nothing. The formats and places are those each
client documents (docs/clients/).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
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
# supported for stdio"), so these go when connect writes its URL in a JSON file.
STDIO_KEYS = ("command", "args", "cwd")

# What Codex refuses in a Streamable HTTP entry: its config loader fails on any of these beside a
# `url` ("command": the entry is read as stdio, where a url is refused; the others: "X is not
# supported for streamable_http"; `bearer_token`, the plain-text token it no longer takes). Connect
# edits a Codex file only in the keys it owns, so it refuses an entry holding one and names them all.
CODEX_NOT_HTTP = ("command", "args", "env", "env_vars", "cwd", "bearer_token")

# Codex ends a tool call after `tool_timeout_sec` (60 s unless set): no longer than the longest
# wait_for_messages (60 s, services/live.MAX_WAIT_S) with its answer's way back, so an idle agent's
# wait would time out. Connect writes this, comfortably above it, unless the entry holds more.
CODEX_TOOL_TIMEOUT_S = 90


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


def codex_values(url: str, entry: dict[str, Any] | None = None) -> dict[str, toml_entry.Value]:
    """The keys of our Codex entry that connect sets, given the entry there (if any): the URL, the
    token's variable and a tool timeout above the longest wait (a larger one of the person's is
    kept). Any other key there is the person's."""
    values: dict[str, toml_entry.Value] = {"url": url, "bearer_token_env_var": TOKEN_VAR}
    timeout = (entry or {}).get("tool_timeout_sec")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < CODEX_TOOL_TIMEOUT_S:
        values["tool_timeout_sec"] = CODEX_TOOL_TIMEOUT_S
    return values


def _not_http(entry: dict[str, Any]) -> str:
    """The keys of `entry` Codex refuses in an HTTP entry, as a person finds them in the file."""
    return ", ".join(
        f"{key} (a table)" if isinstance(entry[key], dict) else key for key in CODEX_NOT_HTTP if key in entry
    )


def _merge_codex(path: Path, url: str) -> Change:
    """Set our entry's `url`, `bearer_token_env_var` and `tool_timeout_sec` where the file has them
    (a table, its dotted keys or an inline table), add the ones missing beside them, or append our
    table; every other byte of the file stays as it was. The result is parsed again and must hold
    exactly what the file held with those keys set: otherwise connect refuses, naming the file, and
    writes nothing. An entry holding a key Codex refuses beside a `url` (`CODEX_NOT_HTTP`) is
    refused too, every such key named."""
    try:
        # as bytes, decoded: its line ends (CRLF included) are kept, as every other byte is
        before = path.read_bytes().decode() if path.exists() else None
    except UnicodeDecodeError:
        raise ConnectError(f"{path} is not UTF-8 text, as TOML must be; fix it, then run again") from None
    text = before or ""
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        why = exc if isinstance(exc, tomllib.TOMLDecodeError) else "nested too deeply to read"
        raise ConnectError(f"{path} is not valid TOML ({why}); fix it, then run again") from None
    servers = data.get("mcp_servers", {})
    if not isinstance(servers, dict):
        raise ConnectError(f"mcp_servers in {path} must be a table of servers; fix it, then run again")
    entry = servers.get(SERVER_NAME)
    if entry is not None and not isinstance(entry, dict):
        raise ConnectError(f"mcp_servers.{SERVER_NAME} in {path} must be a table; fix it, then run again")
    if entry is not None and (refused := _not_http(entry)):
        what = "is a stdio server's entry with" if "command" in entry else "has"
        raise ConnectError(
            f"mcp_servers.{SERVER_NAME} in {path} {what} {refused}: connect writes a Streamable HTTP "
            "entry (a url), and Codex refuses to load one holding any of these; remove them (or the "
            "whole entry), then run again (the file is unchanged)"
        )
    owned = codex_values(url, entry)
    if entry is not None and all(entry.get(key) == value for key, value in owned.items()):
        return Change(path, before, text)
    expected = {**data, "mcp_servers": {**servers, SERVER_NAME: {**(entry or {}), **owned}}}
    try:
        after = toml_entry.set_keys(text, ["mcp_servers", SERVER_NAME], owned)
        merged = tomllib.loads(after)
    except (toml_entry.Unmergeable, tomllib.TOMLDecodeError, ValueError, IndexError, RecursionError) as exc:
        merged, why = None, str(exc) if isinstance(exc, toml_entry.Unmergeable) else ""
    else:
        why = ""
    if merged != expected:
        raise ConnectError(
            f"{path}: cannot set {', '.join(owned)} in its mcp_servers.{SERVER_NAME} entry "
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
    path = spec.where(project)
    refuse_links(project, path)
    return spec.merge(path, url)


def refuse_links(project: Path, path: Path) -> None:
    """A file connect writes in the repository, or a directory on the way to it, that is a symbolic
    link is refused: a repository can commit links, and one (`.cursor -> ~/.ssh`, `.mcp.json ->
    ~/.bashrc`) would have connect write the person's token or config wherever it points. Files
    outside the repository (Codex's ~/.codex) are the person's own and not checked."""
    if not path.is_relative_to(project):
        return
    for step in [*reversed(path.relative_to(project).parents[:-1]), path.relative_to(project)]:
        if (project / step).is_symlink():
            raise ConnectError(
                f"{project / step} is a symbolic link; connect writes nothing through links in a "
                "repository (one committed there could point anywhere): make it a plain file or "
                "directory, or remove it, then run again"
            )


def write_file(path: Path, text: str, *, mode: int | None = None) -> None:
    """`text` in `path`, through a new file of a random name beside it, renamed over it: no link at
    the path or at a temporary name (a repository may commit either) is ever written through.
    The mode is `mode`, else the replaced file's, else what the umask gives a new file."""
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.is_file() and not path.is_symlink() else _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:  # newline="": the text's own line ends, CRLF kept
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_token(project: Path, secret: str, agent: str) -> Path:
    """Keep the secret in a file git ignores (the directory ignores itself), readable by its owner only."""
    directory = project / LOCAL_DIR
    path = directory / TOKEN_FILE
    refuse_links(project, path)  # a committed token.env -> docs/notes.txt would publish the token
    directory.mkdir(parents=True, exist_ok=True)
    ignore = directory / ".gitignore"
    refuse_links(project, ignore)
    if not ignore.exists():
        write_file(ignore, "# Local secrets of vibe-ensemble connect: never commit.\n*\n")
    load = f"set -a; . {path}; set +a"
    write_file(
        path,
        f"# vibe-ensemble token for agent {agent}: load with `{load}`\n{TOKEN_VAR}={secret}\n",
        mode=0o600,
    )
    return path


def apply(change: Change) -> None:
    if not change.changed:
        return
    change.path.parent.mkdir(parents=True, exist_ok=True)
    write_file(change.path, change.after)
