"""Lease patterns: validation, git wildmatch coverage, and symmetric overlap."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibe_ensemble.domain import globs, overlap
from vibe_ensemble.domain.errors import InvalidInput


def P(text: str) -> globs.LeasePattern:
    return globs.parse("paths[0]", text)[0]


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("/etc/passwd", "relative to the repository root"),
        ("~/notes.md", "relative to the repository root"),
        ("C:\\repo\\a.py", "relative to the repository root"),
        ("../other/x.py", "'..'"),
        ("src/../../x", "'..'"),
        ("**", "covers the whole repository"),
        ("*", "covers the whole repository"),
        ("**/*", "covers the whole repository"),
        ("*/**", "covers the whole repository"),
        (".", "covers the whole repository"),
        ("./", "covers the whole repository"),
        ("src/[ab", "unclosed '['"),
        ("src/a\\", "lone backslash"),
        ("src\\core\\x.py", "a backslash escapes a glob character"),
        ("docs\\.md", "not '.'"),
        ("src/[z-a].py", "reversed range"),
        ("src/[[:nope:]]", "unknown character class"),
        ("a" * 257, "at most 256 characters"),
        ("src/" + "*a" * 33, "33 wildcards"),
        ("src/" + "?" * 33, "33 wildcards"),
        ("src/" + "[ab]" * 33, "33 wildcards"),
        ("src/\x00", "NUL"),
        ("file:///home/me/x.py", "file://"),
        ("Service://db", "named resource"),
        ("service://has space", "named resource"),
    ],
)
def test_bad_patterns_are_refused_naming_field_and_rule(raw: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        globs.parse("paths[2]", raw)
    assert exc.value.field == "paths[2]"
    assert rule in exc.value.rule


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("./src/a.py", "src/a.py"),
        ("src//api/", "src/api"),
        ("  docs/*.md ", "docs/*.md"),
        ("src/./x", "src/x"),
    ],
)
def test_patterns_are_normalised_with_a_note(raw: str, text: str) -> None:
    pattern, note = globs.parse("paths[0]", raw)
    assert pattern.text == text
    if raw.strip() != text:
        assert note is not None and text in note


def test_a_clean_pattern_has_no_note() -> None:
    assert globs.parse("p", "src/**") == (globs.LeasePattern("src/**", resource=False), None)


def test_named_resources_are_recognised() -> None:
    pattern, _ = globs.parse("p", "service://staging-db")
    assert pattern.resource and pattern.text == "service://staging-db"
    assert not pattern.literal


def test_literal_patterns() -> None:
    assert P("src/a.py").literal
    assert not P("src/*.py").literal
    assert not P("src/a\\*.py").literal


# --- coverage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("src/**", "src/a.py", True),
        ("src/**", "src/deep/er/a.py", True),
        ("src/**", "src", False),
        ("src/**", "srcx/a.py", False),
        ("src", "src/a.py", True),  # a directory covers what is inside it
        ("src", "src", True),
        ("src", "srcx", False),
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),  # `*` stays within one segment
        ("**/*.py", "src/a.py", True),
        ("**/*.py", "a.py", True),
        ("**/*.py", "a.pyc", False),
        ("docs/api/*.md", "docs/api/index.md", True),
        ("docs/api/*.md", "docs/api/v1/index.md", False),
        ("docs/**/index.md", "docs/index.md", True),
        ("docs/**/index.md", "docs/a/b/index.md", True),
        ("src/a?.py", "src/ab.py", True),
        ("src/a?.py", "src/a/.py", False),
        ("src/[abc].py", "src/b.py", True),
        ("src/[!abc].py", "src/b.py", False),
        ("src/[!abc].py", "src/d.py", True),
        ("src/[^abc].py", "src/d.py", True),
        ("x/[[:digit:]]", "x/7", True),
        ("x/[[:digit:]]", "x/a", False),
        ("x/[]]", "x/]", True),
        ("x/[a-]", "x/-", True),
        ("x/a\\*b", "x/a*b", True),
        ("x/a\\*b", "x/axb", False),
        ("a**b/c", "axyzb/c", True),  # `**` inside a segment is a plain `*`
        ("a**b/c", "ax/yb/c", False),
        ("service://db", "service://db", True),
        ("service://db", "service://db2", False),
    ],
)
def test_covers(pattern: str, path: str, covered: bool) -> None:
    assert overlap.covers(P(pattern), path) is covered


@pytest.mark.parametrize(
    "path", ["a[1].py", "we*ird?.md", "back\\slash", "sp ace/ü.txt", "[!x]", "emoji/🎉.txt"]
)
def test_escape_covers_exactly_the_path(path: str) -> None:
    pattern = P(globs.escape(path))
    assert pattern.literal == (globs.escape(path) == path)
    assert overlap.covers(pattern, path)
    assert not overlap.covers(pattern, path + "x")


# --- overlap -------------------------------------------------------------------------------------

OVERLAPPING = [
    ("src/**", "src/a.py"),
    ("src/**", "src/api/**"),
    ("src", "src/a.py"),
    ("src", "src/**/*.py"),
    ("**/*.py", "src/a.py"),
    ("**/*.py", "tests/**"),
    ("docs/api/*.md", "docs/**"),
    ("docs/api/*.md", "docs/*/index.md"),
    ("a/**/b", "a/x/y/b"),
    ("a/**/b", "a/b"),
    ("a/*/b", "a/b/b"),
    ("src/*.py", "src/*"),
    ("src/*.py", "src/test_*"),
    ("[!a]/x", "b/*"),
    ("x/[[:digit:]]", "x/[0-9]"),
    ("**/test_*.py", "tests/unit/*"),
    ("service://db", "service://db"),
    ("src/a.py", "src/a.py"),
]
DISJOINT = [
    ("*.py", "src/a.py"),
    ("src/**", "docs/**"),
    ("src/**", "srcx"),
    ("docs/api/*.md", "docs/api/x.txt"),
    ("docs/api/*.md", "docs/api/v1/**"),
    ("src/*.py", "src/*.js"),
    ("[ab]/x", "c/x"),
    ("x/[[:digit:]]", "x/[a-z]"),
    ("service://db", "service://db2"),
    ("service://db", "service/db"),
    ("src/a.py", "src/b.py"),
    ("a/*/b", "a/c/d"),
]


@pytest.mark.parametrize(("a", "b"), OVERLAPPING)
def test_overlapping_pairs(a: str, b: str) -> None:
    assert overlap.overlaps(P(a), P(b))
    assert overlap.overlaps(P(b), P(a))
    for left, right in ((a, b), (b, a)):
        found = overlap.witness(P(left), P(right))
        assert found is not None
        assert overlap.covers(P(a), found) and overlap.covers(P(b), found)


@pytest.mark.parametrize(("a", "b"), DISJOINT)
def test_disjoint_pairs(a: str, b: str) -> None:
    assert not overlap.overlaps(P(a), P(b))
    assert not overlap.overlaps(P(b), P(a))


def test_long_wildcard_patterns_are_decided_within_the_budget() -> None:
    a = P("/".join(["*a*b*"] * 10))
    b = P("/".join(["*b*a*"] * 10))
    budget = overlap.Budget()
    assert overlap.overlaps(a, b, budget)
    assert not overlap.overlaps(P("/".join(["*a*b*"] * 10) + ".py"), P("/".join(["*"] * 10) + ".js"))
    assert budget.spent < overlap.WORK_BUDGET


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # a star, a letter and a run of `?`: exponential for a search over sets of states
        ("*a" + "?" * 30, "*b" + "?" * 30 + "c", True),
        ("*a" + "?" * 30 + "x", "*b" + "?" * 30 + "c", False),
        # a long `*a*a*...` against an ordinary lease
        ("*a" * 16, "**/*.py", True),
        ("*a" * 16 + ".js", "*.py", False),
    ],
)
def test_adversarial_pairs_are_decided_in_a_polynomial_number_of_steps(
    a: str, b: str, expected: bool
) -> None:
    budget = overlap.Budget()
    assert overlap.overlaps(P(a), P(b), budget) is expected
    assert budget.spent < 10_000


def test_a_comparison_past_its_budget_is_refused_not_guessed() -> None:
    a, b = P("*" + "a" * 120 + "*" + "a" * 120), P("*" + "a" * 100 + "*" + "a" * 100 + "*")
    with pytest.raises(overlap.TooComplex) as exc:
        overlap.overlaps(a, b, overlap.Budget(1000))
    assert (exc.value.a, exc.value.b) == (a, b)
    assert overlap.overlaps(a, b)  # the default budget decides it


# --- properties ----------------------------------------------------------------------------------
# Patterns are built from segments of a few atoms; a reference matcher (a regular expression
# written independently of the automaton code) decides coverage.

_ATOMS = {"a": "a", "b": "b", ".": r"\.", "*": "[^/]*", "?": "[^/]", "[ab]": "[ab]", "[!a]": "[^a/]"}


def _segment(atoms: list[str]) -> list[str]:
    # `**` spelled by two star atoms is a globstar, and `.`/`..` are not names: keep the
    # strategies honest about both
    if set(atoms) == {"*"}:
        return ["*"]
    return ["a", *atoms] if "".join(atoms) in (".", "..") else atoms


segment = st.one_of(
    st.just(["**"]),
    st.lists(st.sampled_from(sorted(_ATOMS)), min_size=1, max_size=3).map(_segment),
)
pattern_segments = st.lists(segment, min_size=1, max_size=3).filter(
    lambda segs: not all(s in (["**"], ["*"]) for s in segs)
)


def _text(segments: list[list[str]]) -> str:
    return "/".join("".join(s) for s in segments)


def _reference(segments: list[list[str]]) -> re.Pattern[str]:
    rx = ""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ["**"]:
            rx += ".+" if last else "(?:[^/]+/)*"
            continue
        rx += "".join(_ATOMS[a] for a in seg) + ("" if last else "/")
    return re.compile(rx + "(?:/.+)?")


def _valid_path(path: str) -> bool:
    return bool(path) and "" not in path.split("/")


_SHORT_PATHS = [
    "".join(chars)
    for n in range(1, 6)
    for chars in itertools.product("ab.x/", repeat=n)
    if _valid_path("".join(chars))
]


@settings(max_examples=300, deadline=None)
@given(pattern_segments, pattern_segments)
def test_overlap_is_symmetric_and_agrees_with_a_reference_matcher(
    a: list[list[str]], b: list[list[str]]
) -> None:
    pa, pb = P(_text(a)), P(_text(b))
    ra, rb = _reference(a), _reference(b)
    ab, ba = overlap.witness(pa, pb), overlap.witness(pb, pa)
    assert (ab is None) == (ba is None)
    for found in (ab, ba):
        if found is not None:
            # whatever the automata found, the reference matcher confirms
            assert _valid_path(found)
            assert ra.fullmatch(found) and rb.fullmatch(found), found
    if ab is None:
        # no short path is covered by both
        assert not any(ra.fullmatch(p) and rb.fullmatch(p) for p in _SHORT_PATHS)


@settings(max_examples=200, deadline=None)
@given(pattern_segments, st.sampled_from(_SHORT_PATHS))
def test_covers_agrees_with_the_reference_matcher(segments: list[list[str]], path: str) -> None:
    assert overlap.covers(P(_text(segments)), path) == bool(_reference(segments).fullmatch(path))


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_is_either_a_pattern_or_a_clear_error(raw: str) -> None:
    try:
        pattern, _ = globs.parse("paths[0]", raw)
    except InvalidInput as exc:
        assert exc.field == "paths[0]" and exc.rule
        return
    assert pattern.text and not pattern.text.startswith("/")
    assert overlap.overlaps(pattern, pattern)


# Patterns up to the limits, from the pieces that make automata branch: stars, `**`, `?` runs,
# classes and letters.
_PIECES = ["*", "?", "a", "b", "[ab]", "[!a]", "/", "/**/", ".py", "?" * 6]


def _bounded(pieces: list[str]) -> str | None:
    try:
        return globs.parse("p", "x" + "".join(pieces))[0].text
    except InvalidInput:
        return None


big_pattern = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=40).map(_bounded).filter(bool)


@settings(max_examples=200, deadline=None)
@given(big_pattern, big_pattern)
def test_random_pattern_pairs_finish_within_the_budget(a: str, b: str) -> None:
    budget = overlap.Budget()
    answer = overlap.overlaps(globs.parse("p", a)[0], globs.parse("p", b)[0], budget)
    assert budget.spent <= overlap.WORK_BUDGET
    assert answer == overlap.overlaps(globs.parse("p", b)[0], globs.parse("p", a)[0])


@pytest.mark.parametrize(
    ("lease", "files", "covered"),
    [
        ("**/*.py", "README.md", None),  # the patterns overlap (README.md/x.py), the file is not covered
        ("**/x.py", "docs/*.md", None),
        ("src/**/x.py", "src/a.py", None),
        ("**/test_*.py", "lib/a.py", None),
        ("src/api/**", "src/api", None),  # what is inside src/api, not a file named so
        ("**/*.py", "src/a.py", "src/a.py"),
        ("src/**", "src/a/b.py", "src/a/b.py"),
        ("src/api", "src/api/app.py", "src/api/app.py"),  # a directory lease covers its files
        ("src/api", "src/api", "src/api"),
        ("src/*.py", "src/a\\[1\\].py", "src/a[1].py"),  # an escaped file name (the guard sends these)
        ("docs/**", "docs/*.md", "docs/!.md"),  # files by glob: one of them is covered
        ("service://db", "service://db", "service://db"),
        ("service://db", "db", None),
    ],
)
def test_a_file_is_covered_only_by_a_lease_that_covers_it(
    lease: str, files: str, covered: str | None
) -> None:
    found = overlap.covered_file(globs.parse("lease", lease)[0], globs.parse("files", files)[0])
    if covered is None or "!" not in covered:
        assert found == covered
    else:  # a glob's witness: some file it matches, within the lease
        assert found is not None and found.startswith("docs/") and found.endswith(".md")


def test_may_overlap_is_decided_by_the_literal_prefixes() -> None:
    """Two globs whose texts before the first wildcard are not one the start of the other cover no
    path in common; otherwise the automata decide (the property tests above compare `overlaps`,
    which asks `may_overlap` first, with a reference matcher)."""
    assert not overlap.may_overlap("src/api/**", "docs/**")
    assert not overlap.may_overlap("src/a\\*b", "src/ab")  # an escaped `*` is a literal one
    assert overlap.may_overlap("src/**", "src/api/x.py")
    assert overlap.may_overlap("**/x.py", "docs/x.py")
    assert overlap.may_overlap("src/a\\*b", "src/a*")


_PREFIX_TEXT = st.text(alphabet="ab/*?[\\", max_size=8)


@settings(max_examples=400, deadline=None)
@given(ours=st.lists(_PREFIX_TEXT, min_size=1, max_size=5), other=_PREFIX_TEXT)
def test_prefixes_answer_as_may_overlap_with_each(ours: list[str], other: str) -> None:
    """A reservation's patterns sift a project's live leases at once (`Prefixes`): the answer for
    each lease is `may_overlap` with any one of them, whatever the prefixes share."""
    assert overlap.Prefixes(ours).may_overlap(other) == any(overlap.may_overlap(t, other) for t in ours)


def test_prefixes_sift_by_either_side_being_the_start_of_the_other() -> None:
    sieve = overlap.Prefixes(["src/api/x.py", "docs/a\\*b", "lib/*.py"])
    assert sieve.may_overlap("src/**")  # a lease's prefix starts ours
    assert sieve.may_overlap("src/api/x.py.d/**")  # ours starts the lease's
    assert sieve.may_overlap("lib/sub/**")
    assert sieve.may_overlap("docs/a*b")  # the escaped `*` is the literal one
    assert not sieve.may_overlap("docs/ab")
    assert not sieve.may_overlap("src/web/**")
    assert not sieve.may_overlap("tests/**")


def test_no_automaton_is_built_for_globs_whose_prefixes_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation is compared with every live lease of its project: with 15,000 of them in other
    directories it took 2 s of automata. Globs whose literal prefixes differ are answered from their
    texts; shared leases are not compared with a shared reservation at all."""
    from datetime import UTC, datetime

    from vibe_ensemble.domain.models import Reservation
    from vibe_ensemble.services.lease_conflicts import conflicts_with

    now = datetime.now(UTC)
    held = [
        Reservation(i, "p", "hoarder", f"src/mod{i}/**/*.py", i % 2 == 0, "", now, now) for i in range(1000)
    ]
    inside = [globs.parse("paths[0]", "src/mod7/**")[0]]
    assert [c.reservation_id for c in conflicts_with(inside, held, exclusive=True)] == [7]
    assert conflicts_with(inside, held, exclusive=False) == []  # lease 7 is shared: no conflict

    def no_automaton(*_: object, **__: object) -> None:
        raise AssertionError("an automaton was built")

    monkeypatch.setattr(overlap, "_compile", no_automaton)
    wanted = [globs.parse("paths[0]", "docs/**/*.md")[0]]
    assert conflicts_with(wanted, held, exclusive=True) == []
    assert not overlap.overlaps(wanted[0], globs.parse("p", "src/**/*.py")[0])
    assert overlap.covered_file(globs.parse("p", "src/**")[0], globs.parse("p", "docs/*.md")[0]) is None
