"""docs/mcp-tools.md is generated from the tools (the reference and the measured size of
`tools/list`): it fails here when the two drift apart."""

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


def test_stale_size_figures_are_caught() -> None:
    """The sizes were prose, and went stale as the schemas grew (23,761 written, 23,846 sent)."""
    text = DOC.read_text()
    block = text[text.index(reference.SIZE_BEGIN) : text.index(reference.SIZE_END)]
    figures = re.findall(r"\d{1,3}(?:,\d{3})+", block)
    assert len(figures) == 3, block  # core, core with spaces, full
    stale = text.replace(block, block.replace(figures[0], "23,761"))
    assert reference.splice(stale) != stale
    assert reference.splice(stale) == text
