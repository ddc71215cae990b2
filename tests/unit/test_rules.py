"""Pure domain rules: validation of text, names, slugs, labels, limits; the dependency cycle check."""

from __future__ import annotations

import itertools
import re
import tracemalloc
from datetime import UTC, datetime

import pytest

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.errors import InvalidInput


def test_find_cycle_returns_the_closing_path() -> None:
    # 2 depends on 1, 3 depends on 2: giving 1 a dependency on 3 closes 1 -> 3 -> 2 -> 1.
    edges = {2: [1], 3: [2]}
    assert rules.find_cycle(edges, 1, [3]) == [1, 3, 2, 1]


def test_find_cycle_two_issues() -> None:
    assert rules.find_cycle({2: [1]}, 1, [2]) == [1, 2, 1]


def test_find_cycle_self_dependency() -> None:
    assert rules.find_cycle({}, 5, [5]) == [5, 5]


def test_find_cycle_none_for_a_dag() -> None:
    # a diamond: 4 -> (2, 3) -> 1; adding 5 -> 4 and 1 -> nothing is fine
    edges = {4: [2, 3], 2: [1], 3: [1]}
    assert rules.find_cycle(edges, 5, [4]) is None
    assert rules.find_cycle(edges, 4, [1, 2]) is None
    assert rules.find_cycle(edges, 1, []) is None


def test_find_cycle_finds_it_behind_a_shared_node() -> None:
    # both 2 and 3 lead to 4; only 4 -> 1 closes the loop
    edges = {2: [4], 3: [4], 4: [1]}
    assert rules.find_cycle(edges, 1, [2, 3]) == [1, 2, 4, 1]


def test_find_cycle_is_linear_in_memory_on_a_big_graph() -> None:
    # i depends on i - 1 and i - 2 for 10,000 issues: closing the loop walks the graph once
    n = 10_000
    edges = {i: [i - 1, i - 2] if i > 2 else [1] for i in range(2, n + 1)}
    tracemalloc.start()
    try:
        cycle = rules.find_cycle(edges, 1, [n])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cycle is not None and cycle[:2] == [1, n] and cycle[-1] == 1
    assert all(b in edges[a] for a, b in itertools.pairwise(cycle[1:]))
    assert peak < 10 * 1024 * 1024  # a path copied per node would take ~400 MB
    assert rules.find_cycle(edges, n + 1, [n]) is None


def test_cycle_text_elides_the_middle_of_a_long_cycle() -> None:
    assert rules.cycle_text([1, 3, 2, 1]) == "#1 -> #3 -> #2 -> #1"
    text = rules.cycle_text([1, *range(10_000, 0, -1)])
    assert text.startswith("#1 -> #10000 -> ") and text.endswith("-> #2 -> #1")
    assert "(9981 more)" in text and len(text) < 300


def test_text_strips_and_requires() -> None:
    assert rules.text("title", "  hello  ", max_len=10) == "hello"
    with pytest.raises(InvalidInput) as err:
        rules.text("title", "   ", max_len=10)
    assert err.value.field == "title"
    assert err.value.rule == "must not be empty"
    assert str(err.value) == "title: must not be empty"
    for invisible in ("\u200b", " \u200b\u200d ", "\u202e", "\ufeff\u2060"):  # shows nothing
        with pytest.raises(InvalidInput, match="title: must not be empty"):
            rules.text("title", invisible, max_len=10)
    assert rules.text("title", "\u200bx", max_len=10) == "\u200bx"  # shows something: kept as given


def test_text_optional_keeps_value() -> None:
    assert rules.text("body", "", max_len=10, required=False) == ""
    assert rules.text("body", " x ", max_len=10, required=False) == " x "


def test_text_too_long_names_limit_and_length() -> None:
    with pytest.raises(InvalidInput) as err:
        rules.text("body", "x" * (rules.MAX_BODY + 1), max_len=rules.MAX_BODY)
    assert err.value.field == "body"
    assert err.value.rule == "must be at most 65536 characters (got 65537)"
    assert rules.text("body", "x" * rules.MAX_BODY, max_len=rules.MAX_BODY) == "x" * rules.MAX_BODY


def test_text_refuses_nul() -> None:
    with pytest.raises(InvalidInput, match="NUL") as err:
        rules.text("subject", "a\x00b", max_len=10)
    assert err.value.field == "subject"


@pytest.mark.parametrize("value", ["w1", "Agent_7", "a.b-c", "9lives"])
def test_name_accepts(value: str) -> None:
    assert rules.name("name", value) == value


@pytest.mark.parametrize("value", ["-lead", "_x", "has space", "slash/name", "ünï", "x" * 65])
def test_name_refuses(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        rules.name("name", value)
    assert err.value.field == "name"


@pytest.mark.parametrize("value", ["default", "web-app", "a1"])
def test_slug_accepts(value: str) -> None:
    assert rules.slug("slug", value) == value


@pytest.mark.parametrize("value", ["Web", "web_app", "-web", "web app", ""])
def test_slug_refuses(value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        rules.slug("slug", value)
    assert err.value.field == "slug"


def test_labels_strip_and_dedupe_in_order() -> None:
    assert rules.labels("labels", ["b", " a ", "b", "a"]) == ["b", "a"]


def test_labels_refuse_empty_and_too_many() -> None:
    with pytest.raises(InvalidInput, match=re.escape("labels[1]: must not be empty")):  # the entry, by index
        rules.labels("labels", ["ok", " "])
    with pytest.raises(InvalidInput, match=re.escape("labels[2]: must be at most 64 characters (got 65)")):
        rules.labels("labels", ["a", "b", "x" * 65])
    with pytest.raises(InvalidInput, match=re.escape("labels: at most 32 entries")):
        rules.labels("labels", [f"l{i}" for i in range(33)])
    assert len(rules.labels("labels", [f"l{i}" for i in range(32)])) == 32


def test_limit_bounds() -> None:
    assert rules.limit("limit", 1) == 1
    assert rules.limit("limit", 500) == 500
    for bad in (0, 501, -3):
        with pytest.raises(InvalidInput, match="limit: must be between 1 and 500"):
            rules.limit("limit", bad)


def test_memorable_name_is_a_valid_name() -> None:
    for _ in range(50):
        generated = rules.memorable_name()
        assert re.fullmatch(r"[a-z]+-[a-z]+-\d{2}", generated)
        assert rules.name("name", generated) == generated


@pytest.mark.parametrize("value", ["x\n", "\tx", "x\r\n", "x\u2028", "\x1b[2Jx"])
def test_a_line_refuses_control_characters_at_its_ends_too_rather_than_trim_them(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"^title: must be one line without control characters \(got U\+"):
        rules.line("title", value, max_len=200)


def test_a_line_still_trims_spaces() -> None:
    assert rules.line("title", "  two words  ", max_len=200) == "two words"
    assert rules.labels("labels", [" y ", "y"]) == ["y"]
    with pytest.raises(InvalidInput, match="without control characters"):
        rules.labels("labels", ["y\n"])


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("garbage", "must be an ISO 8601 time with a timezone, e.g. 2030-01-31T12:00:00Z (got 'garbage')"),
        ("2030-13-01T00:00:00Z", "must be an ISO 8601 time with a timezone"),
        ("", "must be an ISO 8601 time with a timezone"),
        ("2030-01-31", "must include a timezone, e.g. 2030-01-31T12:00:00Z"),
        ("2030-01-31T12:00:00", "must include a timezone"),
        ("9999-12-31T23:00:00-05:00", "must be a time between the years 1 and 9999 in UTC"),
        ("0001-01-01T00:00:00+01:00", "must be a time between the years 1 and 9999 in UTC"),
    ],
)
def test_a_written_time_is_refused_naming_the_field_and_the_rule(text: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        rules.moment_text("expires_at", text)
    assert refused.value.field == "expires_at"
    assert str(refused.value).startswith(f"expires_at: {rule}")


def test_a_written_time_with_a_timezone_is_that_time_in_utc() -> None:
    assert rules.moment_text("since", "2030-01-31T14:00:00+02:00") == datetime(2030, 1, 31, 12, tzinfo=UTC)
    assert rules.moment_text("since", " 2030-01-31T12:00:00Z ") == datetime(2030, 1, 31, 12, tzinfo=UTC)


def test_a_duration_is_said_in_the_largest_whole_unit() -> None:
    """The guidance states VIBE_OFFLINE_AFTER_S as a person says it: 3600 was "60 minutes", 86400
    "1440 minutes" and 1e9 "1e+09 seconds"."""
    from vibe_ensemble.domain.rules import duration

    said = {s: duration(s) for s in (1, 0.5, 4, 60, 90, 120, 3600, 5400, 7200, 86400, 1e9)}
    assert said == {
        1: "1 second",
        0.5: "0.5 seconds",
        4: "4 seconds",
        60: "1 minute",
        90: "90 seconds",
        120: "2 minutes",
        3600: "1 hour",
        5400: "90 minutes",
        7200: "2 hours",
        86400: "1 day",
        1e9: "1,000,000,000 seconds",
    }
