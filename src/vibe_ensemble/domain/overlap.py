"""Whether two lease patterns overlap, and whether a pattern covers a path.

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
why). The patterns themselves are parsed in `domain/globs.py`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from vibe_ensemble.domain.charsets import ANY, NOT_SLASH, SLASH, Ranges, intersect, pick
from vibe_ensemble.domain.globs import DSTAR, STAR, LeasePattern, tokenise

WORK_BUDGET = 200_000


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
def _compile(text: str, inside: bool = True) -> _NFA:
    """The automaton of the paths a (normalised, valid) glob covers; with `inside=False`, of the
    paths it matches only (files, not what a directory of that name would hold)."""
    nfa = _NFA()
    cur = nfa.state()
    tokens = tokenise("pattern", text)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == DSTAR:
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
        elif tok == STAR:
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
    if not inside:
        nfa.accept = {cur}
        return nfa
    # Coverage: a matched path also covers everything inside it.
    inside_slash, within = nfa.state(), nfa.state()
    nfa.moves[cur].append((SLASH, inside_slash))
    nfa.moves[inside_slash].append((ANY, within))
    nfa.moves[within].append((ANY, within))
    nfa.accept = {cur, within}
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
    if not may_overlap(a.text, b.text):
        return None
    # fast path for plain paths (the common case, e.g. the files of a commit)
    if a.literal and covers(b, a.text):
        return a.text
    if b.literal and covers(a, b.text):
        return b.text
    try:
        return _product_witness(_compile(a.text), _compile(b.text), budget or Budget())
    except OverBudget:
        raise TooComplex(a, b) from None


def covered_file(lease: LeasePattern, files: LeasePattern, budget: Budget | None = None) -> str | None:
    """A path `files` matches, taken as a file (nothing inside it), that `lease` covers; or None.

    What a commit or an edit asks: `README.md` (a file) is not covered by `**/*.py`, though the two
    patterns overlap (`witness` counts `README.md/x.py`, since a lease of `README.md` would cover
    what is inside it were it a directory). Raises TooComplex past the work budget.
    """
    if lease.resource or files.resource:
        return files.text if lease.resource and files.resource and lease.text == files.text else None
    if not may_overlap(lease.text, files.text):
        return None
    if files.literal:
        return files.text if covers(lease, files.text) else None
    try:
        return _product_witness(_compile(files.text, inside=False), _compile(lease.text), budget or Budget())
    except OverBudget:
        raise TooComplex(files, lease) from None


def may_overlap(a: str, b: str) -> bool:
    """False when two path globs cannot overlap, decided from their text alone: every path a glob
    covers starts with its literal prefix (its text up to the first wildcard), so two globs whose
    prefixes are not one the start of the other (`src/api/` and `docs/`) cover no path in common.
    True says nothing; the automata decide. A project's live leases are mostly of other
    directories: with 15,000 of them a reservation's comparisons took 2 s, nearly all of them
    answered here."""
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    return pa.startswith(pb) or pb.startswith(pa)


class Prefixes:
    """`may_overlap` of a few globs against many others at once (a reservation's or a commit's
    patterns against every live lease of a project): per other glob, one bisection of the sorted
    literal prefixes and a set lookup per distinct prefix length, not a comparison with each."""

    def __init__(self, texts: list[str]) -> None:
        self._sorted = sorted({_literal_prefix(text) for text in texts})
        self._known = set(self._sorted)
        self._lengths = sorted({len(prefix) for prefix in self._known})

    def may_overlap(self, text: str) -> bool:
        """`may_overlap(ours, text)` for some glob of ours (False: none of them can overlap `text`)."""
        prefix = _literal_prefix(text)
        # ours that start with `prefix` are together in sorted order, from the first that is >= it
        at = bisect_left(self._sorted, prefix)
        if at < len(self._sorted) and self._sorted[at].startswith(prefix):
            return True
        return any(prefix[:n] in self._known for n in self._lengths if n <= len(prefix))


# A glob's literal text: characters that are not wildcards or escapes, and escaped characters
_LITERAL = re.compile(r"(?:[^*?\[\\]|\\.)*", re.DOTALL)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


@lru_cache(maxsize=8192)
def _literal_prefix(text: str) -> str:
    """A glob's text up to its first wildcard (`*`, `?`, `[`), escapes undone (`a\\*b` is `a*b`)."""
    literal = _LITERAL.match(text).group()  # type: ignore[union-attr]  # (matches the empty text)
    return _ESCAPED.sub(r"\1", literal) if "\\" in literal else literal


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
    common = intersect(intersect(ra, rb), rv)
    return pick(common) if common else ""


def _path_to(parents: dict[_Node, tuple[_Node, str] | None], node: _Node) -> str:
    chars: list[str] = []
    entry = parents[node]
    while entry is not None:
        prev, char = entry
        chars.append(char)
        entry = parents[prev]
    return "".join(reversed(chars))
