"""`vibe-ensemble --help` and `token …` start without the database layer, the services or the server:
the root lists its commands from `cli.GROUPS` and imports a command's module only to run it (or to
show its own help). What each start imports is checked, not how long it takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vibe_ensemble.cli import GROUPS, load

HEAVY = (
    "sqlalchemy",
    "asyncpg",
    "alembic",
    "vibe_ensemble.runtime",
    "vibe_ensemble.services",
    "vibe_ensemble.api",
)


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(GROUPS))
def test_the_root_help_lists_each_commands_own_line(name: str) -> None:
    assert _first_paragraph(load(name).help) == GROUPS[name][1]


def imported_by(*argv: str) -> set[str]:
    """The modules a fresh interpreter has imported after `vibe-ensemble ARGV` ran."""
    code = (
        "import json, sys\n"
        "from vibe_ensemble.cli import app\n"
        "try:\n"
        f"    app({list(argv)!r}, prog_name='vibe-ensemble')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv", [["--help"], ["token", "--help"], ["token", "list", "--help"], ["token", "create", "--help"]]
)
def test_help_and_token_commands_start_without_the_database_layer(argv: list[str]) -> None:
    modules = imported_by(*argv)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == [], f"{' '.join(argv)} imported {heavy[:10]}"
    loaded = {m.removeprefix("vibe_ensemble.cli.") for m in modules if m.startswith("vibe_ensemble.cli.")}
    expected = {"common", "tokens"} if argv[0] == "token" else set()
    assert loaded == expected  # no other command's module
