"""docs/ covers the product: every setting, event type, CLI command and MCP tool is documented there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from vibe_ensemble.api.mcp import build_mcp
from vibe_ensemble.cli import app
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.ops.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
TEXT = "\n".join(p.read_text() for p in sorted(DOCS.rglob("*.md")))


def _undocumented(names: list[str], spelled: str) -> list[str]:
    return [name for name in names if not re.search(spelled.format(re.escape(name)), TEXT)]


def test_every_setting_is_documented_by_its_environment_variable() -> None:
    names = [f"VIBE_{field.upper()}" for field in Settings.model_fields]
    assert len(names) >= 30
    assert _undocumented(names, r"\b{}\b") == [], "document these settings in docs/"


def test_every_event_type_is_documented() -> None:
    assert _undocumented([t.value for t in EventType], r"`{}`") == [], "regenerate docs/live.md"


def _commands(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    if not hasattr(command, "list_commands"):
        yield " ".join(prefix)
        return
    for name in command.list_commands(None):  # through the group's API: the root loads lazily
        yield from _commands(command.get_command(None, name), (*prefix, name))


def test_every_cli_command_is_documented() -> None:
    commands = list(_commands(typer.main.get_command(app)))
    assert {"serve", "mcp", "token create", "guard install"} <= set(commands)
    assert _undocumented([f"vibe-ensemble {c}" for c in commands], r"{}\b") == [], "document these in docs/"


async def test_every_mcp_tool_is_documented_in_the_tool_reference() -> None:
    tools = sorted(t.name for t in await build_mcp(Settings(), profile="full").list_tools())
    assert {"register_agent", "reserve_paths", "create_project"} <= set(tools)
    reference = (DOCS / "mcp-tools.md").read_text()
    missing = [name for name in tools if f"### `{name}`" not in reference]
    assert missing == [], "regenerate docs/mcp-tools.md (python -m vibe_ensemble.api.mcp.reference --write)"
