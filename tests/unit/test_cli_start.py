"""`vibe-ensemble --help` and `token …` start without the database layer, the services or the server:
the root lists its commands from `cli.GROUPS` and imports a command's module only to run it (or to
show its own help). A token command that runs needs the database layer, never the server's web or
MCP stack; `serve` on SQLite gets to ready without what only PostgreSQL, migrating or the dashboard's
pages need. What each start imports is checked, not how long it takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, launch
from vibe_ensemble.cli import GROUPS, load

# What the server needs and no token command does.
SERVER = ("fastapi", "starlette.applications", "uvicorn", "mcp", "alembic", "vibe_ensemble.api")
HEAVY = (
    *SERVER,
    "sqlalchemy",
    "asyncpg",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "vibe_ensemble.runtime",
    "vibe_ensemble.services",
    "vibe_ensemble.store",
)
# What only a PostgreSQL database needs (store/postgres.py): a SQLite start never loads it.
POSTGRESQL = ("asyncpg", "sqlalchemy.ext.asyncio", "sqlalchemy.orm", "vibe_ensemble.store.postgres")


def among(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in prefixes or m.startswith(tuple(p + "." for p in prefixes)))


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(GROUPS))
def test_the_root_help_lists_each_commands_own_line(name: str) -> None:
    assert _first_paragraph(load(name).help) == GROUPS[name][1]


def imported_by(*argv: str, env: dict[str, str] | None = None, stdin: str = "") -> set[str]:
    """The modules a fresh interpreter has imported after `vibe-ensemble ARGV` ran (reading `stdin`)."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['vibe-ensemble', *{list(argv)!r}]\n"
        "from vibe_ensemble.cli import app\n"
        "try:\n"
        f"    app({list(argv)!r}, prog_name='vibe-ensemble')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv", [["--help"], ["token", "--help"], ["token", "list", "--help"], ["token", "create", "--help"]]
)
def test_help_and_token_commands_start_without_the_database_layer(argv: list[str]) -> None:
    modules = imported_by(*argv)
    heavy = among(modules, HEAVY)
    assert heavy == [], f"{' '.join(argv)} imported {heavy[:10]}"
    loaded = {m.removeprefix("vibe_ensemble.cli.") for m in modules if m.startswith("vibe_ensemble.cli.")}
    expected = {"common", "tokens"} if argv[0] == "token" else set()
    assert loaded == expected  # no other command's module


# Each client's prompt event: the hook heartbeats, which needs the server (down here: it warns).
PROMPTS = {
    "claude-code": "UserPromptSubmit",
    "gemini": "BeforeAgent",
    "cursor": "beforeSubmitPrompt",
    "codex": "UserPromptSubmit",
}


@pytest.mark.parametrize("client", list(PROMPTS))
def test_a_hook_runs_without_the_logging_library_or_the_database(client: str, tmp_path: Path) -> None:
    """A hook runs on every prompt and edit of an agent's session: it loads neither structlog (an
    unconfigured one would print on stdout, the client's channel) nor the server-side layers."""
    event = {"hook_event_name": PROMPTS[client], "cwd": str(tmp_path), "prompt": "hello"}
    env = {**os.environ, "VIBE_ENSEMBLE_TOKEN": "vibe_" + "x" * 40}
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    modules = imported_by(
        "hook",
        client,
        "--url",
        url,
        "--agent",
        "ana",
        "--dir",
        str(tmp_path),
        env=env,
        stdin=json.dumps(event),
    )
    assert "vibe_ensemble.hooks.server" in modules and "httpx2" in modules  # it did try the server
    assert among(modules, HEAVY) == []


def migrated(tmp_path: Path) -> dict[str, str]:
    """The environment of a command on a migrated SQLite database in `tmp_path`."""
    env = {**os.environ, "VIBE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "vibe_ensemble.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return env


def test_token_list_runs_without_the_server_stack(tmp_path: Path) -> None:
    modules = imported_by("token", "list", env=migrated(tmp_path))
    assert "sqlalchemy" in modules and "vibe_ensemble.services.tokens" in modules  # it did run
    assert among(modules, SERVER) == []
    assert among(modules, POSTGRESQL) == []


def test_serve_on_sqlite_is_ready_without_postgresql_alembic_or_the_page_templates(tmp_path: Path) -> None:
    """Every module the server imports until /readyz answers 200, as `python -X importtime` lists them."""
    port = free_port()
    env = {**migrated(tmp_path), "VIBE_PORT": str(port), "VIBE_HOST": "127.0.0.1"}
    argv = [sys.executable, "-X", "importtime", "-m", "vibe_ensemble.cli", "serve"]
    server = launch(argv, env, tmp_path / "server.log", f"http://127.0.0.1:{port}")
    server.stop()
    lines = server.log().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert {"vibe_ensemble.api.app", "vibe_ensemble.store.sqlite", "uvicorn", "mcp"} <= modules  # it served
    assert among(modules, POSTGRESQL) == []
    assert among(modules, ("alembic", "jinja2", "starlette.templating")) == []  # migrating; the first page


def test_a_read_only_sqlite_file_is_named_as_such_not_as_an_unreachable_server() -> None:
    """`serve` on a SQLite file it may not write said `cannot reach the database (attempt to write a
    readonly database): is it running, and is --database-url right?`: advice for a network server."""
    import sqlite3

    from vibe_ensemble.cli.common import expected_failure

    refused = sqlite3.OperationalError("attempt to write a readonly database")
    refused.sqlite_errorcode = 8  # SQLITE_READONLY
    line = expected_failure(refused, "sqlite:////data/vibe.db")
    assert line is not None
    assert line.startswith("the SQLite database /data/vibe.db is read-only to this process")
    assert "chmod u+w" in line and "is it running" not in line
