"""The issues' dependency graph for people: layers (an issue to the right of everything it waits on),
the critical path (the longest chain of unfinished dependencies), what unblocks the most, and a
layout in plain numbers that a template draws as SVG. No I/O.

Only unfinished issues take part in the chain and the counts; the finished issues an unfinished one
depends on are drawn (greyed) so that its edges are complete, but wait on nothing.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from vibe_ensemble.domain.attention import IssueRef
from vibe_ensemble.domain.untrusted import marked_visibly, shortened

NODE_W = 224
NODE_H = 44
GAP_X = 60
GAP_Y = 14
MARGIN = 10
LABEL_CHARS = 26


@dataclass
class Node:
    issue: IssueRef
    layer: int = 0
    row: int = 0
    x: int = 0
    y: int = 0
    critical: bool = False
    unblocks: int = 0  # unfinished issues that wait on this one, directly or not

    @property
    def label(self) -> str:
        """The title as drawn in the box: its hiding characters marked first (`⟦U+202E⟧`, as every
        page shows them), then cut to `LABEL_CHARS` without splitting a grapheme or a mark."""
        return shortened(marked_visibly(self.issue.title), LABEL_CHARS)


@dataclass
class Edge:
    source: int  # the dependency
    target: int  # the issue that waits on it
    critical: bool = False
    path: str = ""  # SVG path data


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    critical: list[int]  # the critical path, first dependency first
    width: int
    height: int
    top_unblockers: list[Node] = field(default_factory=list)
    left_out: int = 0  # unfinished issues not drawn (over the cap)


def _layers(ids: list[int], deps: dict[int, list[int]]) -> dict[int, int]:
    """Each issue's layer: 0 for one that waits on nothing drawn, else one more than its deepest
    dependency. A dependency cycle (which the services refuse) is cut where it is met."""
    layer: dict[int, int] = {}
    visiting: set[int] = set()

    def depth(n: int) -> int:
        if n in layer:
            return layer[n]
        if n in visiting:
            return 0
        visiting.add(n)
        value = max((depth(d) + 1 for d in deps.get(n, [])), default=0)
        visiting.discard(n)
        layer[n] = value
        return value

    for n in ids:
        depth(n)
    return layer


def critical_path(unfinished: list[int], deps: dict[int, list[int]]) -> list[int]:
    """The longest chain of unfinished issues, each waiting on the one before (ties: lower ids)."""
    alive = set(unfinished)
    best: dict[int, list[int]] = {}
    visiting: set[int] = set()

    def chain(n: int) -> list[int]:
        if n in best:
            return best[n]
        if n in visiting:
            return []  # a cycle (which the services refuse) is cut where it is met
        visiting.add(n)
        longest: list[int] = []
        for d in sorted(deps.get(n, [])):
            if d in alive and d not in visiting:
                candidate = chain(d)
                if len(candidate) > len(longest):
                    longest = candidate
        visiting.discard(n)
        best[n] = [*longest, n]
        return best[n]

    result: list[int] = []
    for n in sorted(alive):
        candidate = chain(n)
        if len(candidate) > len(result):
            result = candidate
    return result if len(result) > 1 else []


def unblock_counts(unfinished: list[int], deps: dict[int, list[int]]) -> dict[int, int]:
    """For each unfinished issue, how many unfinished issues wait on it, directly or not."""
    alive = set(unfinished)
    dependants: dict[int, set[int]] = defaultdict(set)
    for n in alive:
        for d in deps.get(n, []):
            if d in alive:
                dependants[d].add(n)
    counts = {}
    for n in alive:
        seen: set[int] = set()
        todo = list(dependants[n])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(dependants[m])
        seen.discard(n)
        counts[n] = len(seen)
    return counts


def layout(refs: list[IssueRef], deps: dict[int, list[int]], left_out: int = 0) -> Graph:
    """Place the issues in columns by layer (rows ordered by their dependencies' rows), mark the
    critical path, count what each unblocks, and draw each edge as a curve."""
    by_id = {r.id: r for r in refs}
    deps = {n: [d for d in ds if d in by_id] for n, ds in deps.items() if n in by_id}
    ids = sorted(by_id)
    layers = _layers(ids, deps)
    unfinished = [n for n in ids if not by_id[n].status.finished]
    critical = critical_path(unfinished, deps)
    on_path = set(critical)
    counts = unblock_counts(unfinished, deps)
    nodes = {
        n: Node(by_id[n], layer=layers[n], critical=n in on_path, unblocks=counts.get(n, 0)) for n in ids
    }
    columns: dict[int, list[Node]] = defaultdict(list)
    for n in ids:
        columns[layers[n]].append(nodes[n])
    for layer in sorted(columns):
        column = columns[layer]

        def weight(node: Node) -> tuple[float, int]:
            rows = [nodes[d].row for d in deps.get(node.issue.id, [])]
            return (sum(rows) / len(rows) if rows else 0.0, node.issue.id)

        column.sort(key=weight)
        for row, node in enumerate(column):
            node.row = row
            node.x = MARGIN + layer * (NODE_W + GAP_X)
            node.y = MARGIN + row * (NODE_H + GAP_Y)
    edges = []
    pairs = set(itertools.pairwise(critical))
    for n in ids:
        for d in deps.get(n, []):
            a, b = nodes[d], nodes[n]
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x, b.y + NODE_H // 2
            bend = max(GAP_X // 2, (x2 - x1) // 2)
            path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
            edges.append(Edge(d, n, critical=(d, n) in pairs, path=path))
    edges.sort(key=lambda e: e.critical)  # the critical path drawn last, on top
    width = MARGIN * 2 + (max(layers.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    tallest = max((len(c) for c in columns.values()), default=0)
    height = MARGIN * 2 + max(tallest * (NODE_H + GAP_Y) - GAP_Y, NODE_H)
    top = sorted((nodes[n] for n in unfinished if counts.get(n)), key=lambda v: (-v.unblocks, v.issue.id))
    return Graph(list(nodes.values()), edges, critical, width, height, top[:5], left_out)
