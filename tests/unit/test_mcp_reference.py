"""docs/mcp-tools.md is generated from the tools: it fails here when the two drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from vibe_ensemble.api.mcp import reference
from vibe_ensemble.api.mcp.profiles import PROFILES

DOC = Path(__file__).parents[2] / "docs" / "mcp-tools.md"


def test_the_tool_reference_is_current() -> None:
    text = DOC.read_text()
    assert reference.splice(text) == text, (
        "run: python -m vibe_ensemble.api.mcp.reference --write docs/mcp-tools.md"
    )


def test_the_reference_lists_each_tool_once_under_its_smallest_profile() -> None:
    headings = re.findall(r"^### `(\w+)` \((core|full)\)$", DOC.read_text(), re.MULTILINE)
    core = {tool.__name__ for tool in PROFILES["core"]}
    expected = [(tool.__name__, "core" if tool.__name__ in core else "full") for tool in PROFILES["full"]]
    assert headings == expected
