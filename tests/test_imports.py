"""The import graph of stnlab, read from the source with ``ast``: no cycles, plain-torch parts.

Every ``import`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a cycle that only closes at type-checking time is still two modules
that each need the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "stnlab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _imports(name: str) -> tuple[set[str], set[str]]:
    """``(stnlab modules, other top-level packages)`` that module ``name`` imports."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()

    def add(target: str) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            internal.add(target)
        else:
            external.add(target.partition(".")[0])

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.rsplit(".", node.level - 1)[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            add(source)
            for alias in node.names:  # `from stnlab.pkg import module` imports that module
                if f"{source}.{alias.name}" in MODULES:
                    add(f"{source}.{alias.name}")
    return internal, external


GRAPH = {name: _imports(name)[0] for name in MODULES}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path ``[a, b, …, a]``, or None when it is acyclic."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def _reachable(start: str) -> set[str]:
    """Modules that importing ``start`` runs: what it imports, and their parent packages."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(GRAPH[node])
            parts = node.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return seen


def test_the_graph_finder_sees_every_kind_of_import() -> None:
    assert "stnlab.geometry.grids" in GRAPH["stnlab.geometry.transforms"]  # from x import y
    assert "stnlab.config" in GRAPH["stnlab.bench.data"]  # import x
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_stnlab_has_no_import_cycle() -> None:
    cycle = _find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_geometry_imports_nothing_else_of_stnlab() -> None:
    for name in MODULES:
        if name.startswith("stnlab.geometry"):
            outside = {m for m in GRAPH[name] if not m.startswith("stnlab.geometry")}
            assert not outside, f"{name} imports {sorted(outside)}"


@pytest.mark.parametrize(
    "name",
    [m for m in MODULES if m.startswith(("stnlab.geometry", "stnlab.models"))]
    + ["stnlab.data.distortions", "stnlab.image_grid"],
)
def test_plain_torch_parts_never_reach_lightning(name: str) -> None:
    reached = {
        module: external
        for module in _reachable(name)
        if (external := _imports(module)[1] & {"lightning", "pytorch_lightning"})
    }
    assert not reached, f"{name} reaches Lightning through {sorted(reached)}"
