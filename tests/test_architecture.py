"""The package graph of ``clews_pipe`` read from the source with ``ast`` (function-local imports too).

It must have no cycle, and no package may import a package of a higher floor (DESIGN.md):
the CLI on top; the three jobs below it; the shared layers (model, retrieval, features, audio)
below them; errors/config at the bottom.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import clews_pipe

PACKAGE_ROOT = Path(clews_pipe.__file__).parent

#: floor of each package; a package may import only packages of a strictly lower floor
FLOORS = {
    "errors": 0,
    "config": 1, "atomic": 1, "progress": 1, "resources": 1, "lock": 1,
    "audio": 2, "retrieval": 2,
    "features": 3,
    "model": 4,
    "pipeline": 5, "training": 5, "evaluation": 5,
    "datasets": 5.5, "baseline": 5.5,  # demo corpora (use pipeline's writers), the Qmax baseline (uses evaluation)
    "cli": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "clews_pipe" or name.startswith("clews_pipe.")}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE_ROOT.rglob("*.py"):
        src = _package(_module_name(path))
        for target in _imports(path):
            dst = _package(target)
            if src and dst and dst != src:
                graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_package_cycle():
    cycle = find_cycle(package_graph())
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_every_package_has_a_floor_and_imports_only_lower_floors():
    packages = {_package(_module_name(p)) for p in PACKAGE_ROOT.rglob("*.py")} - {None}
    assert packages <= set(FLOORS), f"packages without a floor: {sorted(packages - set(FLOORS))}"
    upward = [
        f"{src} (floor {FLOORS[src]}) -> {dst} (floor {FLOORS[dst]})"
        for src, targets in package_graph().items()
        for dst in targets
        if FLOORS[dst] >= FLOORS[src]
    ]
    assert not upward, "imports that do not go down a floor: " + "; ".join(sorted(upward))
