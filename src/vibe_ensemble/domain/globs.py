"""Lease patterns: git wildmatch globs over repository-relative paths, and named resources.

A pattern is one of

- a **named resource**, `scheme://name` (`service://staging-db`, `db://migrations`),
  which only ever overlaps the very same resource; or
- a **path glob** with git's wildmatch semantics (as in `:(glob)` pathspecs):
  `*` and `?` match within one path segment, `[a-z]` / `[!a-z]` are character
  classes (never matching `/`), `**` as a whole segment matches zero or more
  directories (`src/**`, `**/*.py`, `docs/**/index.md`), and `\\*` matches `*` (a new
  pattern may escape only what needs it: `src\\core\\x.py`, a Windows path, is refused).

This module validates and normalises patterns and splits a glob into tokens; whether two
patterns overlap is decided in `domain/overlap.py`. Patterns are limited to MAX_PATTERN
characters and MAX_WILDCARDS wildcards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vibe_ensemble.domain.charsets import NOT_SLASH, POSIX, Ranges, complement, intersect, normalise
from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.domain.rules import CONTROL, MAX_PATTERN

MAX_WILDCARDS = 32
_RESOURCE = re.compile(r"^([a-z][a-z0-9+.-]*)://(\S+)$")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_METACHARS = frozenset("*?[\\")


@dataclass(frozen=True)
class LeasePattern:
    """A validated, normalised lease pattern."""

    text: str
    resource: bool

    @property
    def literal(self) -> bool:
        """A plain path (no wildcards): it covers only itself and what is inside it."""
        return not self.resource and not (_METACHARS & set(self.text))


def parse(field: str, raw: str) -> tuple[LeasePattern, str | None]:
    """Validate and normalise one pattern; returns it and a note when it was rewritten.

    Refused (InvalidInput naming `field`): empty, too long, NUL, absolute paths,
    `..` segments, malformed classes, and patterns that cover the whole repository.
    """
    if len(raw) > MAX_PATTERN:  # as sent, as the published schemas say (spaces around it count)
        raise InvalidInput(field, f"must be at most {MAX_PATTERN} characters (got {len(raw)})")
    text = raw.strip()
    if not text:
        raise InvalidInput(field, "must not be empty")
    if "\x00" in text:
        raise InvalidInput(field, "must not contain NUL characters")
    if CONTROL.search(text):
        raise InvalidInput(field, "must not contain control characters (a newline, a tab, an escape)")
    resource = _RESOURCE.match(text)
    if resource:
        if resource.group(1) == "file":
            raise InvalidInput(
                field, "file:// URLs are not leases: give a path relative to the repository root", value=raw
            )
        return LeasePattern(text, resource=True), None if text == raw else _normalised(raw, text)
    if "://" in text:
        raise InvalidInput(
            field,
            "a named resource is scheme://name with a lowercase scheme and no spaces, "
            "e.g. service://staging-db",
            value=raw,
        )
    if text.startswith(("/", "~")) or _DRIVE.match(text):
        raise InvalidInput(
            field,
            "must be relative to the repository root (got an absolute path), e.g. src/app.py",
            value=raw,
        )
    segments = [s for s in text.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise InvalidInput(field, "must not contain '..': it would escape the repository", value=raw)
    normalised = "/".join(segments)
    if not normalised or all(set(s) <= {"*"} for s in segments):
        raise InvalidInput(
            field,
            "covers the whole repository; lease only what you will change, e.g. src/api/** or docs/*.md",
            value=raw,
        )
    pointless = _pointless_escape(normalised)
    if pointless is not None:
        # `src\core\x.py` (a Windows path) would lease `srccorex.py`, and cover nothing meant
        raise InvalidInput(
            field,
            f"a backslash escapes a glob character (\\*, \\?, \\[, \\\\), not {pointless!r}: "
            "separate directories with '/', e.g. src/core/x.py",
            value=raw,
        )
    tokens = tokenise(field, normalised)  # syntax check: classes and escapes are well formed
    wildcards = sum(1 for t in tokens if isinstance(t, str) or t != ((t[0][0], t[0][0]),))
    if wildcards > MAX_WILDCARDS:
        raise InvalidInput(
            field,
            f"has {wildcards} wildcards ('*', '**', '?' or '[...]'); at most {MAX_WILDCARDS} are allowed",
            value=raw,
        )
    # compared with what was sent: spaces cut from either end are a rewrite too (a git path may
    # begin with a space, so " src/x.py" leased as "src/x.py" is said, not done silently)
    return LeasePattern(normalised, resource=False), None if normalised == raw else _normalised(
        raw, normalised
    )


def _normalised(raw: str, text: str) -> str:
    return f"{raw!r} was normalised to {text!r}"


def _pointless_escape(text: str) -> str | None:
    """The first character a backslash escapes that needs no escape (a letter, a digit, '.', '_' or
    a space): such a pattern is a path with Windows separators, not a glob. None when none."""
    i = 0
    while i < len(text) - 1:
        if text[i] == "\\":
            following = text[i + 1]
            if following.isalnum() or following in "._ ":
                return following
            i += 2
        else:
            i += 1
    return None


def stored(text: str) -> LeasePattern:
    """A pattern read back from the store (validated when it was granted; not re-checked
    against limits that may have tightened since)."""
    return LeasePattern(text, resource=bool(_RESOURCE.match(text)))


def escape(path: str) -> str:
    """The pattern that covers exactly `path` (wildmatch metacharacters escaped)."""
    return "".join("\\" + c if c in _METACHARS else c for c in path)


# Tokens of a path glob: a character set to match once, a `*` (any run within a segment),
# or a `**` segment. Slashes are character sets too.
STAR = "*"
DSTAR = "**"
Token = Ranges | str


def tokenise(field: str, text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                raise InvalidInput(field, "ends with a lone backslash (use \\\\ for a literal one)")
            tokens.append(((ord(text[i + 1]), ord(text[i + 1])),))
            i += 2
        elif c == "*":
            j = i
            while j < len(text) and text[j] == "*":
                j += 1
            whole_segment = (i == 0 or text[i - 1] == "/") and (j == len(text) or text[j] == "/")
            tokens.append(DSTAR if j - i >= 2 and whole_segment else STAR)
            i = j
        elif c == "?":
            tokens.append(NOT_SLASH)
            i += 1
        elif c == "[":
            ranges, i = _char_class(field, text, i)
            tokens.append(ranges)
        else:
            tokens.append(((ord(c), ord(c)),))
            i += 1
    return tokens


def _char_class(field: str, text: str, start: int) -> tuple[Ranges, int]:
    """Parse `[...]` at `start`; returns the set (never containing '/') and the index after it."""
    i = start + 1
    negate = i < len(text) and text[i] in "!^"
    if negate:
        i += 1
    items: list[tuple[int, int]] = []
    first = True
    while True:
        if i >= len(text):
            raise InvalidInput(field, f"has an unclosed '[' at position {start + 1}")
        c = text[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "[" and text.startswith("[:", i):
            end = text.find(":]", i + 2)
            name = text[i + 2 : end] if end != -1 else ""
            if name not in POSIX:
                raise InvalidInput(field, f"has an unknown character class at position {i + 1}")
            items.extend(POSIX[name])
            i = end + 2
            continue
        if c == "\\":
            if i + 1 >= len(text):
                raise InvalidInput(field, f"has an unclosed '[' at position {start + 1}")
            c = text[i + 1]
            i += 1
        lo = ord(c)
        i += 1
        if i + 1 < len(text) and text[i] == "-" and text[i + 1] != "]":
            hi_char = text[i + 1]
            if hi_char == "\\" and i + 2 < len(text):
                hi_char = text[i + 2]
                i += 1
            hi = ord(hi_char)
            i += 2
            if hi < lo:
                raise InvalidInput(field, f"has a reversed range {chr(lo)}-{chr(hi)} in a character class")
            items.append((lo, hi))
        else:
            items.append((lo, lo))
    ranges = normalise(items)
    if negate:
        ranges = complement(ranges)
    return intersect(ranges, NOT_SLASH), i
