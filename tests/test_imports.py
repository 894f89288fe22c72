"""Imports flow one way: the package's import graph, read statically, has no cycle.

Every ``import`` and ``from ... import`` of every module under ``jaxdistill/`` counts, those inside
functions too (a lazy import only hides a cycle until someone moves it to the top). Only imports under
``if TYPE_CHECKING:`` are left out: they never run. ``from a.b import c`` is an edge to ``a.b.c`` when that
is a module, else to ``a.b``; an edge goes to the module named, not to the packages above it (as in
import-linter).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = "jaxdistill"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` for every .py file of the package (``__init__`` names the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[tuple[str, str]]:
    """What ``tree`` imports, as ``(module, name)`` pairs (``name`` "" for ``import module``); relative
    imports resolved, TYPE_CHECKING blocks left out."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.update((base, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``: ``from a.b import c`` reaches ``a.b.c`` when that is
    a module, else ``a.b``."""
    modules = module_names(root)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for base, item in imported_names(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py"):
            target = f"{base}.{item}" if item and f"{base}.{item}" in modules else base
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(graph, set(c), c[0]) for c in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is on no cycle of its component")


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "jaxdistill.calibrate" in graph  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_lazy_relative_and_from_imports_and_names_a_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .low import thing\n")
    (pkg / "sub" / "low.py").write_text("def thing():\n    from jaxdistill import top\n")  # lazy, absolute
    (pkg / "top.py").write_text("from jaxdistill.sub import low\nfrom typing import TYPE_CHECKING\n"
                                "if TYPE_CHECKING:\n    from jaxdistill import typed\n")
    (pkg / "typed.py").write_text("import jaxdistill.top\n")
    graph = import_graph(pkg)
    assert graph["jaxdistill.sub"] == {"jaxdistill.sub.low"}  # relative, a name of a module
    assert graph["jaxdistill.top"] == {"jaxdistill.sub.low"}  # "from pkg import module", TYPE_CHECKING left out
    assert graph["jaxdistill.typed"] == {"jaxdistill.top"}
    assert find_cycles(graph) == [["jaxdistill.sub.low", "jaxdistill.top", "jaxdistill.sub.low"]]
    (pkg / "sub" / "low.py").write_text("def thing():\n    pass\n")
    assert find_cycles(import_graph(pkg)) == []


@pytest.mark.parametrize("source, expected", [
    ("from jaxdistill.sub import name_in_init", {"jaxdistill.sub"}),
    ("import jaxdistill.sub.low as low", {"jaxdistill.sub.low"}),
    ("from . import low", {"jaxdistill.sub.low"}),
    ("from .. import top", {"jaxdistill.top"}),
])
def test_edges_go_to_the_module_named(tmp_path, source, expected):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    for path in ("__init__.py", "top.py", "sub/__init__.py", "sub/low.py"):
        (pkg / path).write_text("")
    (pkg / "sub" / "user.py").write_text(source + "\n")
    assert import_graph(pkg)["jaxdistill.sub.user"] == expected
