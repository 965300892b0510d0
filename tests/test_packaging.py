"""What pip installs is enough: every package llmbook imports is a core dependency.

Colab's set-up cell installs only ``llmbook`` and its core dependencies, so a package
that the library imports (even inside a function, like huggingface_hub for the gpu
profile's GPT-2 weights) but that only an extra declares breaks a chapter there.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# Imported by llmbook but installed by another dependency, with the one that brings it.
BROUGHT_BY = {"IPython": "ipywidgets"}
# Imported only by the grader (llmbook-grade), which says which extra to install when they are
# missing; check() in a learner's notebook needs neither. These may come from an extra.
IN_EXTRA = {"nbclient", "nbformat"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]) for req in requirements}


def core_dependencies() -> set[str]:
    return names(pyproject()["project"]["dependencies"])


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in lib/llmbook, with the files."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "lib" / "llmbook").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "llmbook" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(path.name)
    return found


def test_every_imported_package_is_a_core_dependency():
    core = core_dependencies()
    dists = packages_distributions()
    missing = {}
    extras = pyproject()["project"].get("optional-dependencies", {})
    for module, files in third_party_imports().items():
        if module in BROUGHT_BY:
            continue
        provided = {normalise(d) for d in dists.get(module, [module])}
        declared = core | set().union(*map(names, extras.values())) if module in IN_EXTRA else core
        if not provided & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported by llmbook but not in [project] dependencies (or its extra): {missing}"


def test_the_hub_client_is_core_and_pinned():
    assert "huggingface-hub" in core_dependencies()
    assert "hub" not in pyproject()["project"].get("optional-dependencies", {})
    pins = {normalise(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert core_dependencies() <= pins, f"unpinned in constraints.txt: {sorted(core_dependencies() - pins)}"
