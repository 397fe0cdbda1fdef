"""The package's import graph, read from the source: no cycles, and the framework names no app.

Every import statement counts, lazy ones inside functions and ``TYPE_CHECKING`` blocks too: a
cycle that only works because one side imports late still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "parapipe"


def _modules() -> dict[str, tuple[Path, bool]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The parapipe modules one import statement needs (``from pkg import mod`` needs pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module.split(".") if is_package else module.split(".")[:-1]
        if node.level:
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _targets(name, is_package, node, set(modules))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            if found := visit(target):
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if found := visit(module):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert _cycle(_import_graph()) is None


def test_the_service_and_the_core_name_no_application() -> None:
    """The speech app plugs in through its stage's ``service_adapter()``; nothing below it imports
    it or names it, not even as a string to import later."""
    graph = _import_graph()
    framework = [m for m in graph if m.startswith("parapipe.service") or m == "parapipe.graph"]
    assert {(m, t) for m in framework for t in graph[m] if t.startswith("parapipe.audio")} == set()
    for module in framework:
        path = _modules()[module][0]
        assert "parapipe.audio" not in path.read_text(), module
