"""The dependency graph's arithmetic: layers, the critical path, what unblocks the most, the layout."""

from __future__ import annotations

from vibe_ensemble.domain.attention import IssueRef
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.graph import GAP_X, NODE_W, critical_path, layout, unblock_counts


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
