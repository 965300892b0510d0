"""The import graph of ``llmbook`` has no cycles (DESIGN.md: lower layers never import the model).

Every module of lib/llmbook is parsed, not imported, so the test sees every import,
including those inside functions (a late import hides a cycle from Python, not from us).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
PACKAGE = "llmbook"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The llmbook modules that ``path`` imports anywhere in its body (top level or not)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .a import b
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from llmbook import data" imports the module llmbook.data
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        for target in targets:
            # "import llmbook.a.b" runs llmbook/a/b.py; keep the longest name that is a module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted((LIB / PACKAGE).rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): package_imports(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_llmbook_import_graph_has_no_cycle():
    graph = import_graph()
    assert "llmbook.model" in graph and "llmbook.model" in graph["llmbook.weights"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("lower", ["llmbook.config", "llmbook.device", "llmbook.profile",
                                   "llmbook.data", "llmbook.atomic", "llmbook.layers",
                                   "llmbook.attention", "llmbook.model"])
def test_lower_layers_never_import_the_model_or_its_loaders(lower):
    graph = import_graph()
    if lower not in graph:
        pytest.skip(f"{lower} does not exist")
    reachable, todo = set(), [lower]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    upper = {"llmbook.checkpoint", "llmbook.weights", "llmbook.pretrained"}
    if lower != "llmbook.model":
        upper.add("llmbook.model")
    assert not reachable & upper, f"{lower} reaches {sorted(reachable & upper)}"


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    """The test above can fail: a late import that closes a loop is reported with its path."""
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from llmbook import b\n")
    (pkg / "b.py").write_text("import torch\n\ndef f():\n    from .c import g\n")
    (pkg / "c.py").write_text("def g():\n    import llmbook.a\n")
    monkeypatch.setitem(globals(), "LIB", tmp_path)
    graph = import_graph()
    assert graph["llmbook.b"] == {"llmbook.c"} and graph["llmbook.c"] == {"llmbook.a"}
    assert find_cycle(graph) == ["llmbook.a", "llmbook.b", "llmbook.c", "llmbook.a"]
