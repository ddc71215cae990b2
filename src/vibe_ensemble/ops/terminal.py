"""Showing stored, agent-controlled text on an operator's terminal.

Names, reasons, labels and audit details are written by agents or by anonymous clients. On a
terminal they must show as what they are: control characters (escape sequences that move the
cursor, clear the screen or retitle the window; newlines that fake extra rows) are shown as
visible escapes, and the text is never read as Rich markup (`[red]`, `[/]`).
"""

from __future__ import annotations

import re
import sys

from rich.console import Console
from rich.text import Text

from vibe_ensemble.domain.untrusted import HIDING

# C0 controls, DEL, C1 controls, and the Unicode line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with every control character, and every one that hides or reorders text (bidi
    controls, invisible ones: domain/untrusted.py), replaced by a visible escape (`\\x1b`, `\\n`,
    `\\u202e`)."""
    escape = lambda m: repr(m.group(0))[1:-1]  # noqa: E731
    return HIDING.sub(escape, _CONTROL.sub(escape, text))


def cell(value: object) -> Text:
    """A Rich table cell showing `value` literally: control characters escaped, no markup."""
    return Text(printable(str(value)))


UNBOUNDED = 1_000_000  # columns: a table in a pipe or a file is never cut or wrapped


def table_console() -> Console:
    """Where a command prints a table: on a terminal, the terminal's width; in a pipe or a file no
    limit at all (not Rich's 80 columns), so `token list | grep` sees every cell whole."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=UNBOUNDED)
