"""DESIGN's import rules, read from the source with `ast`: every violation is reported as file:line.

- layers: `api -> services -> store/events -> domain`; each top-level package may import only
  the packages `ALLOWED` lists for it (so no services -> api, no domain -> anything, no store ->
  services/api/events), and outside `api/` only the CLI imports `api`;
- no module imports another module's private (`_`) name, nor reaches one as `module._name`;
- no import cycle between modules (imports under `if TYPE_CHECKING:` do not count).
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).parents[2] / "src"
ROOT = "vibe_ensemble"

# What each top-level package (or module) of vibe_ensemble may import, besides itself and the
# empty root package. api, cli and runtime assemble the application and may import the layers
# below them; nothing below them imports them.
_LOW = {"domain", "auth"}
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "auth": {"domain"},
    "ops": {"domain", "auth"},
    "store": {"domain"},
    "events": _LOW | {"store", "ops"},
    "services": _LOW | {"store", "events", "ops"},
    "guard": _LOW | {"ops"},
    "hooks": _LOW | {"ops"},
    "runtime": _LOW | {"store", "events", "services", "ops"},
    "api": _LOW | {"store", "events", "services", "ops", "runtime"},
    "cli": _LOW | {"store", "events", "services", "ops", "runtime", "api", "guard", "hooks"},
}


@dataclass(frozen=True)
class Import:
    where: str  # file:line
    source: str  # the importing module
    target: str  # the imported module
    name: str | None  # the imported name, for `from target import name` of a non-module
    type_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, type_only
        inner = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _walk(child, inner)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    for node, type_only in _walk(tree):
        where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield Import(where, module, alias.name, None, type_only)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    yield Import(where, module, submodule, None, type_only)
                else:
                    yield Import(where, module, target, alias.name, type_only)


@functools.cache
def all_imports() -> list[Import]:
    """Every import of the package, parsed when a test first asks (not at collection, in every test
    process: most of a second)."""
    return [i for m in MODULES for i in imports_of(m)]


def test_only_the_store_speaks_sql() -> None:
    """SQLAlchemy, and the tables, are the store's business: everyone else calls a repository."""
    violations = []
    for module, path in MODULES.items():
        if _package(module) == "store":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] in ("sqlalchemy", "alembic") or name == f"{ROOT}.store.tables":
                    where = f"{path.relative_to(SRC.parent)}:{node.lineno}"
                    violations.append(f"{where}: {module} imports {name}; only store/ may")
    assert not violations, "\n".join(violations)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_is_in_the_rules() -> None:
    unknown = sorted({_package(m) for m in MODULES} - set(ALLOWED) - {""})
    assert not unknown, f"top-level packages without a layering rule: {unknown} (add them to ALLOWED)"


def test_imports_point_down_the_layers() -> None:
    violations = []
    for i in all_imports():
        source, target = _package(i.source), _package(i.target)
        if source == target or target == "" or source not in ALLOWED:
            continue
        if target not in ALLOWED[source]:
            violations.append(f"{i.where}: {source} may not import {target} ({i.source} -> {i.target})")
    assert not violations, "\n".join(violations)


def test_no_private_name_crosses_a_module_boundary() -> None:
    violations = [
        f"{i.where}: {i.source} imports the private name {i.name} of {i.target}"
        for i in all_imports()
        if i.name is not None and _private(i.name) and i.target != i.source
    ]
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = _module_aliases(tree, module)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                where = f"{path.relative_to(SRC.parent)}:{node.lineno}"
                target = aliases[node.value.id]
                violations.append(f"{where}: {module} reaches the private {target}.{node.attr}")
    assert not violations, "\n".join(violations)


def _module_aliases(tree: ast.Module, module: str) -> dict[str, str]:
    """Local names bound to our modules: `import a.b as x`, `from a import b` (b a module)."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    found[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    found[alias.asname or alias.name] = f"{target}.{alias.name}"
    return found


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines: dict[tuple[str, str], str] = {}
    for i in all_imports():
        if not i.type_only and i.target in MODULES and i.target != i.source:
            graph[i.source].add(i.target)
            lines.setdefault((i.source, i.target), i.where)
    reports = [
        " -> ".join(f"{lines[(a, b)]} ({a} -> {b})" for a, b in itertools.pairwise(cycle))
        for cycle in _cycles(graph)
    ]
    assert not reports, "import cycles:\n" + "\n".join(reports)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(_a_cycle_within(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _a_cycle_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A closed path start -> … -> start inside one strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                frontier.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def test_the_rules_catch_what_they_claim_to() -> None:
    """The checks themselves: a private import and a module alias are both seen."""
    tree = ast.parse("from vibe_ensemble.store import issues as store\nstore._assignee\n")
    assert _module_aliases(tree, "vibe_ensemble.services.issues") == {"store": "vibe_ensemble.store.issues"}
    assert _private("_assignee") and not _private("__version__") and not _private("name")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
