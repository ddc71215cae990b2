"""The dependency graph's arithmetic: layers, the critical path, what unblocks the most, the layout."""

from __future__ import annotations

from vibe_ensemble.domain.attention import IssueRef
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.graph import GAP_X, LABEL_CHARS, NODE_W, critical_path, layout, unblock_counts
from vibe_ensemble.domain.untrusted import one_line


def ref(n: int, status: IssueStatus = IssueStatus.OPEN) -> IssueRef:
    return IssueRef(n, f"issue {n}", status, "p2", None)


def test_the_critical_path_is_the_longest_chain_of_unfinished_dependencies() -> None:
    # 1 <- 2 <- 3 <- 4 and 1 <- 5; 6 alone; 7 -> 8 (a shorter chain)
    deps = {2: [1], 3: [2], 4: [3], 5: [1], 8: [7]}
    assert critical_path([1, 2, 3, 4, 5, 6, 7, 8], deps) == [1, 2, 3, 4]
    assert critical_path([2, 3, 4, 5, 6, 7, 8], deps) == [2, 3, 4]  # 1 finished: it is not in the chain
    assert critical_path([6], deps) == []  # one issue alone is no chain
    assert critical_path([1, 2], {1: [2], 2: [1]}) in ([1, 2], [2, 1])  # a cycle does not loop forever


def test_unblock_counts_are_transitive_over_unfinished_issues() -> None:
    deps = {2: [1], 3: [2], 4: [3], 5: [1]}
    assert unblock_counts([1, 2, 3, 4, 5], deps) == {1: 4, 2: 2, 3: 1, 4: 0, 5: 0}
    assert unblock_counts([1, 2, 4, 5], deps)[1] == 2  # 3 finished: 4 no longer counts through it


def test_layout_puts_each_issue_right_of_what_it_waits_on_and_marks_the_path() -> None:
    refs = [ref(1, IssueStatus.DONE), ref(2), ref(3, IssueStatus.IN_PROGRESS), ref(4), ref(9)]
    graph = layout(refs, {2: [1], 3: [2], 4: [2, 99]}, left_out=7)  # 99 is not drawn: its edge is dropped
    nodes = {n.issue.id: n for n in graph.nodes}
    assert [nodes[i].layer for i in (1, 2, 3, 4, 9)] == [0, 1, 2, 2, 0]
    assert nodes[2].x == nodes[1].x + NODE_W + GAP_X
    assert graph.critical == [2, 3]  # the finished #1 starts no chain; ties go to the lower id
    assert [(e.source, e.target, e.critical) for e in graph.edges if e.critical] == [(2, 3, True)]
    assert {(e.source, e.target) for e in graph.edges} == {(1, 2), (2, 3), (2, 4)}
    assert [n.issue.id for n in graph.top_unblockers] == [2]
    assert nodes[2].unblocks == 2 and nodes[1].unblocks == 0
    assert graph.left_out == 7
    assert graph.width >= max(n.x for n in graph.nodes) + NODE_W
    assert all(n.y + 44 <= graph.height for n in graph.nodes)
    assert len({(n.x, n.y) for n in graph.nodes}) == len(graph.nodes)  # no two boxes on one spot
    assert nodes[1].label == "issue 1" and layout(
        [IssueRef(5, "x" * 40, IssueStatus.OPEN, "p1", None)], {}
    ).nodes[0].label.endswith("…")


FR, DE = "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea"  # 🇫🇷 🇩🇪: two regional indicators each


def label(title: str) -> str:
    return layout([IssueRef(1, title, IssueStatus.OPEN, "p2", None)], {}).nodes[0].label


def test_a_label_is_cut_between_graphemes_never_inside_one() -> None:
    """A title cut to the box's width at a character count split a flag (🇫🇷 to 🇫), took an accent
    from its letter or an emoji from its sequence; and it was cut before its hiding characters were
    marked, so a mark grew the label past the box (or was itself cut)."""
    assert LABEL_CHARS == 26
    assert label("x" * 24 + FR) == "x" * 24 + FR  # it fits: not cut
    assert label("x" * 24 + FR + "yy") == "x" * 24 + "…"  # 🇫🇷 whole or not at all
    assert label("x" * 23 + FR + DE) == "x" * 23 + FR + "…"  # pairs counted from the run's start
    assert label("x" * 24 + "e\u0301\u0302tc") == "x" * 24 + "…"  # é̂: never before a combining mark
    assert label("x" * 23 + "e\u0301\u0302tc") == "x" * 23 + "…"  # not e without its accents
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 👨‍👩‍👧, joined by ZWJ
    assert label("x" * 20 + family + "tail") == "x" * 20 + family + "…"  # 25 characters: it fits
    assert label("x" * 21 + family + "tail") == "x" * 21 + "…"  # never on either side of a ZWJ
    assert label("x" * 24 + "\u2764\ufe0f!") == "x" * 24 + "…"  # ❤️: never before a variation selector
    assert label("x" * 24 + "\U0001f44d\U0001f3fd!!") == "x" * 24 + "…"  # 👍🏽: the skin tone stays on
    # Hiding characters are marked, then cut: never into a mark, and the mark counts its width.
    hidden = label("abc\u200bdefghijklmnopqrstuvwxyz")
    assert hidden == "abc⟦U+200B⟧defghijklmnopq…" and len(hidden) == LABEL_CHARS
    assert label("x" * 20 + "\u202eabcdefgh") == "x" * 20 + "…"  # ⟦U+202E⟧ whole or not at all
    for title in ("x" * 24 + FR + "yy", "abc\u200b" * 20, FR * 30, "e\u0301" * 30):
        assert len(label(title)) <= LABEL_CHARS


def test_one_line_cuts_at_a_grapheme_too() -> None:
    assert one_line("ab" + FR + "cd", 4) == "ab…"
    assert one_line("x" * 200, 10) == "x" * 9 + "…"
