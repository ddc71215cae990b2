"""Every command's help shows a flag as a flag (`--dry-run`), never with a type after it as if it
took a value (`--dry-run <bool>`: people then type `--dry-run true`, which fails), while an option
that takes a value keeps its type (`--agent <str>`)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import structlog
from typer.core import TyperOption
from typer.testing import CliRunner

from vibe_ensemble.cli import GROUPS, app, load


@pytest.fixture(autouse=True)
def _logging_left_as_it_was() -> Iterator[None]:
    """The CLI's root callback points structlog at the stderr of the moment (CliRunner's, closed
    after each invocation): later tests in this process would log into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def command_paths() -> list[list[str]]:
    """Every command and sub-command, as the words that name it (the root is [])."""
    paths: list[list[str]] = [[]]
    for name in GROUPS:
        paths.append([name])
        paths += [[name, sub] for sub in getattr(load(name), "commands", {})]  # a group's commands
    return paths


def params_of(path: list[str]) -> list[TyperOption]:
    if not path:
        return []
    command = load(path[0])
    for word in path[1:]:
        command = command.commands[word]  # type: ignore[union-attr]
    return [param for param in command.params if isinstance(param, TyperOption) and not param.hidden]


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "root")
def test_flags_show_no_type_in_help(path: list[str]) -> None:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, prog_name="vibe-ensemble")
    assert done.exit_code == 0, done.output
    assert "<bool>" not in done.output
    assert re.search(r"--help\s+Show this message", done.output)
    for param in params_of(path):
        name = param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0]
        kind = re.escape(param.metavar) if param.metavar else r"<[^>]*>"  # what a value is: <str>, TIME
        row = r"^│\s+(?:\*\s+)?" + re.escape(name) + r"(?:,\S+)?\s+(" + kind + r")?"  # its row of the panel
        shown = re.search(row, done.output, re.MULTILINE)
        assert shown is not None, name
        assert (shown.group(1) is None) == param.is_flag, (name, shown.group(0))
