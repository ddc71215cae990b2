"""Docs generated from the code: a block between two markers in a Markdown file, kept current.

`access.py` (the permission table) and `mcp/reference.py` (the MCP tool reference) each render
their block; this module splices it into the document and gives them one command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def splice(document: str, begin: str, end: str, body: str) -> str:
    """`document` with the text between the `begin` and `end` markers replaced by `body`."""
    head, found, rest = document.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"the document has no {begin!r} … {end!r} block")
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def command(
    what: str, render: Callable[[], str], splice_into: Callable[[str], str], argv: list[str] | None
) -> int:
    """Print the rendered block, or (`--write FILE`) splice it into a document."""
    parser = argparse.ArgumentParser(description=f"Print the {what}, or write it into a document.")
    parser.add_argument("--write", type=Path, help=f"Markdown file with the {what} markers to update.")
    args: Any = parser.parse_args(argv)
    if args.write is None:
        print(render())
        return 0
    path: Path = args.write
    path.write_text(splice_into(path.read_text()))
    return 0
