"""The package graph of ``clews_pipe`` read from the source with ``ast`` (function-local imports too).

It must have no cycle, and no package may import a package of a higher floor (docs/architecture.md):
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
    "config": 1, "atomic": 1, "progress": 1, "resources": 1, "lock": 1, "digests": 1,
    "ranks": 2, "audio": 2, "retrieval": 2, "features": 2, "reporting": 2,
    "store": 3, "model": 3,
    "datasets": 4, "embeddings": 4,
    "extract": 5, "search": 5, "training": 5, "evaluation": 5, "baseline": 5,
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


def _module_imports(path: Path) -> set[str]:
    """Modules of ``clews_pipe`` that ``path`` imports, ``from package import module`` resolved to the module."""
    found = set()
    for name in _imports(path):
        found.add(name)
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module or ""
            if not parent.startswith("clews_pipe"):
                continue
            for alias in node.names:
                candidate = f"{parent}.{alias.name}"
                if _module_path(candidate) is not None:
                    found.discard(parent)
                    found.add(candidate)
    return found


def _module_path(module: str) -> Path | None:
    base = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_graph_inside_packages() -> dict[str, set[str]]:
    """File-level imports between the modules of one package (its ``__init__`` included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE_ROOT.rglob("*.py"):
        src = _module_name(path)
        for target in _module_imports(path):
            if target != src and _package(target) == _package(src) and _package(src) is not None:
                graph[src].add(target)
    return graph


def test_no_import_circle_between_the_files_of_a_package():
    cycle = find_cycle(module_graph_inside_packages())
    assert cycle is None, "file-level import circle: " + " -> ".join(cycle)


MAX_FUNCTION_LINES = 80


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Every function or method of ``src`` longer than ``limit`` lines (def line to last line)."""
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(PACKAGE_ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_function_finder_counts_lines(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    tree = ast.parse(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    lengths = {n.name: n.end_lineno - n.lineno + 1 for n in tree.body}
    assert lengths == {"long": 82, "short": 2}


def test_no_function_over_80_lines():
    found = long_functions()
    assert not found, "functions over 80 lines: " + "; ".join(found)


def _package_lines() -> dict[str, int]:
    lines: dict[str, int] = defaultdict(int)
    for path in PACKAGE_ROOT.rglob("*.py"):
        lines[_package(_module_name(path)) or path.stem] += len(path.read_text().splitlines())
    return lines


def test_no_package_holds_more_than_15_percent_of_the_source():
    lines = _package_lines()
    total = sum(lines.values())
    big = {name: f"{n / total:.0%}" for name, n in lines.items() if n > 0.15 * total}
    assert not big, f"packages over 15% of {total} source lines: {big}"


def test_every_package_docstring_names_its_modules():
    """Each package's docstring says what it owns: every module of the package is named in it."""
    missing = []
    for init in sorted(PACKAGE_ROOT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in sorted(init.parent.glob("*.py")):
            if module.name != "__init__.py" and module.stem not in doc:
                missing.append(f"{init.parent.name}/{module.name}")
    assert not missing, "modules their package docstring does not mention: " + ", ".join(missing)
