"""Lease patterns: git wildmatch globs over repository-relative paths, and named resources.

A pattern is one of

- a **named resource**, `scheme://name` (`service://staging-db`, `db://migrations`),
  which only ever overlaps the very same resource; or
- a **path glob** with git's wildmatch semantics (as in `:(glob)` pathspecs):
  `*` and `?` match within one path segment, `[a-z]` / `[!a-z]` are character
  classes (never matching `/`), `**` as a whole segment matches zero or more
  directories (`src/**`, `**/*.py`, `docs/**/index.md`), and `\\x` matches `x`.

A pattern *covers* every path it matches and everything inside those paths, the
way a pathspec does: leasing `src/api` covers `src/api/app.py`. Two patterns
*overlap* when at least one path is covered by both. Overlap is decided exactly,
as the emptiness test of the product of the two patterns' automata (and of an
automaton of well-formed paths), so it is symmetric by construction:
`src/**` overlaps `src/a.py` exactly when `src/a.py` overlaps `src/**`.

The product is searched over single states (not sets of states), so the work is at most
proportional to the product of the two patterns' sizes, and every step is charged to a
`Budget` (WORK_BUDGET per comparison). Past it `witness` raises TooComplex rather than
guessing; the service refuses the call naming the pattern (docs/leases-and-knowledge.md says
why). Patterns are limited to MAX_PATTERN characters and MAX_WILDCARDS wildcards.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from vibe_ensemble.domain.errors import InvalidInput

MAX_PATTERN = 256
MAX_WILDCARDS = 32
WORK_BUDGET = 200_000
MAX_CODEPOINT = 0x10FFFF
_SLASH = ord("/")
_RESOURCE = re.compile(r"^([a-z][a-z0-9+.-]*)://(\S+)$")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_METACHARS = frozenset("*?[\\")


# --- character sets -------------------------------------------------------------------------------


Ranges = tuple[tuple[int, int], ...]


def _normalise(ranges: list[tuple[int, int]]) -> Ranges:
    """Sort and merge inclusive code-point ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return tuple(out)


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _pick(ranges: Ranges) -> str:
    """A readable character from a non-empty set (for witness paths)."""
    for preferred in "xa0_":
        c = ord(preferred)
        if any(lo <= c <= hi for lo, hi in ranges):
            return preferred
    for lo, hi in ranges:
        for c in range(max(lo, 0x21), min(hi, 0x7E) + 1):
            return chr(c)
    return chr(ranges[0][0])


ANY: Ranges = ((0, MAX_CODEPOINT),)
NOT_SLASH: Ranges = _complement(((_SLASH, _SLASH),))
SLASH: Ranges = ((_SLASH, _SLASH),)

_POSIX: dict[str, list[tuple[int, int]]] = {
    "alnum": [(48, 57), (65, 90), (97, 122)],
    "alpha": [(65, 90), (97, 122)],
    "blank": [(9, 9), (32, 32)],
    "cntrl": [(0, 31), (127, 127)],
    "digit": [(48, 57)],
    "graph": [(33, 126)],
    "lower": [(97, 122)],
    "print": [(32, 126)],
    "punct": [(33, 47), (58, 64), (91, 96), (123, 126)],
    "space": [(9, 13), (32, 32)],
    "upper": [(65, 90)],
    "xdigit": [(48, 57), (65, 70), (97, 102)],
}


# --- parsing --------------------------------------------------------------------------------------


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
    text = raw.strip()
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > MAX_PATTERN:
        raise InvalidInput(field, f"must be at most {MAX_PATTERN} characters (got {len(text)})")
    if "\x00" in text:
        raise InvalidInput(field, "must not contain NUL characters")
    resource = _RESOURCE.match(text)
    if resource:
        if resource.group(1) == "file":
            raise InvalidInput(
                field, "file:// URLs are not leases: give a path relative to the repository root", value=raw
            )
        return LeasePattern(text, resource=True), None
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
    tokens = _tokens(field, normalised)  # syntax check: classes and escapes are well formed
    wildcards = sum(1 for t in tokens if isinstance(t, str) or t != ((t[0][0], t[0][0]),))
    if wildcards > MAX_WILDCARDS:
        raise InvalidInput(
            field,
            f"has {wildcards} wildcards ('*', '**', '?' or '[...]'); at most {MAX_WILDCARDS} are allowed",
            value=raw,
        )
    note = None if normalised == text else f"{raw!r} was normalised to {normalised!r}"
    return LeasePattern(normalised, resource=False), note


def stored(text: str) -> LeasePattern:
    """A pattern read back from the store (validated when it was granted; not re-checked
    against limits that may have tightened since)."""
    return LeasePattern(text, resource=bool(_RESOURCE.match(text)))


def escape(path: str) -> str:
    """The pattern that covers exactly `path` (wildmatch metacharacters escaped)."""
    return "".join("\\" + c if c in _METACHARS else c for c in path)


# Tokens of a path glob: a character set to match once, a `*` (any run within a segment),
# or a `**` segment. Slashes are character sets too.
_STAR = "*"
_DSTAR = "**"
Token = Ranges | str


def _tokens(field: str, text: str) -> list[Token]:
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
            tokens.append(_DSTAR if j - i >= 2 and whole_segment else _STAR)
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
            if name not in _POSIX:
                raise InvalidInput(field, f"has an unknown character class at position {i + 1}")
            items.extend(_POSIX[name])
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
    ranges = _normalise(items)
    if negate:
        ranges = _complement(ranges)
    return _intersect(ranges, NOT_SLASH), i


# --- automata -------------------------------------------------------------------------------------


@dataclass
class _NFA:
    """States 0..n-1; `moves[s]` are (set, target) pairs, `eps[s]` the epsilon targets."""

    moves: list[list[tuple[Ranges, int]]] = field(default_factory=list)
    eps: list[list[int]] = field(default_factory=list)
    accept: set[int] = field(default_factory=set)

    def state(self) -> int:
        self.moves.append([])
        self.eps.append([])
        return len(self.moves) - 1

    def closure(self, states: frozenset[int]) -> frozenset[int]:
        seen = set(states)
        stack = list(states)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)


@lru_cache(maxsize=4096)
def _compile(text: str) -> _NFA:
    """The automaton of the paths a (normalised, valid) glob covers."""
    nfa = _NFA()
    cur = nfa.state()
    tokens = _tokens("pattern", text)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == _DSTAR:
            if i + 1 < len(tokens) and tokens[i + 1] == SLASH:
                # `**/`: zero or more whole directories
                seg, nxt = nfa.state(), nfa.state()
                nfa.eps[cur].append(nxt)
                nfa.moves[cur].append((NOT_SLASH, seg))
                nfa.moves[seg].append((NOT_SLASH, seg))
                nfa.moves[seg].append((SLASH, cur))
                cur = nxt
                i += 2
                continue
            # a trailing `**`: anything, at least one character
            nxt = nfa.state()
            nfa.moves[cur].append((ANY, nxt))
            nfa.moves[nxt].append((ANY, nxt))
            cur = nxt
        elif tok == _STAR:
            nxt = nfa.state()
            nfa.moves[cur].append((NOT_SLASH, cur))
            nfa.eps[cur].append(nxt)
            cur = nxt
        else:
            assert isinstance(tok, tuple)
            nxt = nfa.state()
            nfa.moves[cur].append((tok, nxt))
            cur = nxt
        i += 1
    # Coverage: a matched path also covers everything inside it.
    inside_slash, inside = nfa.state(), nfa.state()
    nfa.moves[cur].append((SLASH, inside_slash))
    nfa.moves[inside_slash].append((ANY, inside))
    nfa.moves[inside].append((ANY, inside))
    nfa.accept = {cur, inside}
    return nfa


# Well-formed relative paths: non-empty segments separated by single slashes.
_VALID = _NFA(
    moves=[[(NOT_SLASH, 1)], [(NOT_SLASH, 1), (SLASH, 2)], [(NOT_SLASH, 1)]],
    eps=[[], [], []],
    accept={1},
)


def _step(nfa: _NFA, states: frozenset[int], char: int) -> frozenset[int]:
    nxt = {t for s in states for ranges, t in nfa.moves[s] if any(lo <= char <= hi for lo, hi in ranges)}
    return nfa.closure(frozenset(nxt))


def covers(pattern: LeasePattern, path: str) -> bool:
    """Does `pattern` cover the concrete repository path `path`?"""
    if pattern.resource:
        return pattern.text == path
    nfa = _compile(pattern.text)
    states = nfa.closure(frozenset({0}))
    for ch in path:
        states = _step(nfa, states, ord(ch))
        if not states:
            return False
    return bool(states & nfa.accept)


class Budget:
    """A count of search steps; charging past `limit` raises OverBudget."""

    def __init__(self, limit: int = WORK_BUDGET) -> None:
        self.limit = limit
        self.spent = 0

    def charge(self, steps: int) -> None:
        self.spent += steps
        if self.spent > self.limit:
            raise OverBudget(self.spent)


class OverBudget(Exception):
    """A comparison ran out of its work budget."""


def witness(a: LeasePattern, b: LeasePattern, budget: Budget | None = None) -> str | None:
    """A path (or resource) that both patterns cover, or None when they do not overlap.

    Raises TooComplex when deciding it takes more than the budget (WORK_BUDGET steps
    unless a smaller `budget` is given).
    """
    if a.resource or b.resource:
        return a.text if a.resource and b.resource and a.text == b.text else None
    # fast path for plain paths (the common case, e.g. the files of a commit)
    if a.literal and covers(b, a.text):
        return a.text
    if b.literal and covers(a, b.text):
        return b.text
    try:
        return _product_witness(_compile(a.text), _compile(b.text), budget or Budget())
    except OverBudget:
        raise TooComplex(a, b) from None


def overlaps(a: LeasePattern, b: LeasePattern, budget: Budget | None = None) -> bool:
    """True when some path (or resource) is covered by both patterns. Symmetric.

    Raises TooComplex past the work budget (see `witness`).
    """
    return witness(a, b, budget) is not None


# A node of the product: one state of each pattern's automaton and one of _VALID.
_Node = tuple[int, int, int]


class TooComplex(Exception):
    """Deciding the overlap of two patterns would take more than WORK_BUDGET steps."""

    def __init__(self, a: LeasePattern, b: LeasePattern) -> None:
        super().__init__(f"comparing {a.text!r} with {b.text!r} exceeds the work budget")
        self.a = a
        self.b = b


def _product_witness(a: _NFA, b: _NFA, budget: Budget) -> str | None:
    """Breadth-first search of the product of `a`, `b` and the well-formed-path automaton.

    Nodes are triples of single states (not sets of states), so the search visits at most
    |a| x |b| x 3 nodes: polynomial in the patterns' lengths, never exponential. Every
    node visited and every edge tried is charged to `budget`.
    """
    starts = [(p, q, 0) for p in a.closure(frozenset({0})) for q in b.closure(frozenset({0}))]
    parents: dict[_Node, tuple[_Node, str] | None] = dict.fromkeys(starts)
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        p, q, v = node
        budget.charge(1)
        if p in a.accept and q in b.accept and v in _VALID.accept:
            return _path_to(parents, node)
        nexts: list[tuple[_Node, str]] = [((t, q, v), "") for t in a.eps[p]]
        nexts += [((p, t, v), "") for t in b.eps[q]]
        for ra, pa in a.moves[p]:
            for rb, qb in b.moves[q]:
                budget.charge(1)
                for rv, vv in _VALID.moves[v]:
                    char = _label(ra, rb, rv)
                    if char:
                        nexts.append(((pa, qb, vv), char))
        for nxt, char in nexts:
            if nxt not in parents:
                parents[nxt] = (node, char)
                queue.append(nxt)
    return None


@lru_cache(maxsize=4096)
def _label(ra: Ranges, rb: Ranges, rv: Ranges) -> str:
    """A character in all three sets, or "" when they share none."""
    common = _intersect(_intersect(ra, rb), rv)
    return _pick(common) if common else ""


def _path_to(parents: dict[_Node, tuple[_Node, str] | None], node: _Node) -> str:
    chars: list[str] = []
    entry = parents[node]
    while entry is not None:
        prev, char = entry
        chars.append(char)
        entry = parents[prev]
    return "".join(reversed(chars))
