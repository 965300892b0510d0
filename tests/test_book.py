"""Book hygiene: the table of contents, stripped notebooks, the Colab set-up cell, links."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("chapters", "exercises", "solutions")
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


def toc_files(node=TOC):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        if "root" in node:
            yield node["root"]
        for value in node.values():
            yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


def load(path):
    return json.loads(path.read_text())


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert any(p.parent.name == "chapters" for p in NOTEBOOKS)


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = set(toc_files())
    for nb in NOTEBOOKS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in listed, f"{nb.name} is missing from _toc.yml"
    for entry in listed:
        matches = [p for p in ROOT.glob(entry + ".*") if p.suffix in (".md", ".ipynb")]
        assert matches, f"_toc.yml lists {entry}, which does not exist"


def test_chapters_have_exercises_and_solutions():
    for ch in (ROOT / "chapters").glob("*.ipynb"):
        assert (ROOT / "solutions" / ch.name).is_file(), f"no solutions/{ch.name}"
        assert (ROOT / "exercises" / ch.name).is_file(), f"no exercises/{ch.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_committed_without_outputs(path):
    for cell in code_cells(load(path)):
        assert cell.get("outputs") == [], f"{path.name}: a cell has outputs; strip them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: a cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_cell_installs_the_library_in_colab_only(path):
    first = "".join(code_cells(load(path))[0]["source"])
    repo = CONFIG["repository"]["url"]
    assert 'if "google.colab" in sys.modules:' in first, f"{path.name}: first code cell is not the Colab set-up"
    assert f"git+{repo}" in first, f"{path.name}: the set-up cell must install from {repo} (_config.yml)"
    body = [ln for ln in first.splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(ln.startswith(("import sys", "if ", "    ")) for ln in body), "set-up cell must do nothing outside Colab"
    tags = code_cells(load(path))[0].get("metadata", {}).get("tags", [])
    assert "remove-cell" in tags, (
        f"{path.name}: tag the set-up cell 'remove-cell' so the website hides it (Colab still runs it)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_metadata(path):
    meta = load(path)["metadata"]
    assert meta["kernelspec"]["name"] == "python3"
    assert meta.get("llmbook", {}).get("chapter") == path.name[:2]


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_chapter_checks_its_claims_and_links_its_exercises(path):
    nb = load(path)
    source = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert sum("assert " in "".join(c["source"]) for c in code_cells(nb)) >= 3, "a chapter asserts its claims"
    assert f"../exercises/{path.name}" in source, "the summary links to the chapter's exercises"
    assert "pick(" in source, "sizes and budgets come from llmbook.profile.pick"
    assert nb["cells"][1]["cell_type"] == "markdown" and "".join(nb["cells"][1]["source"]).startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    for cell in load(path)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for target in re.findall(r"\]\((?!https?:|#)([^)#\s]+)", "".join(cell["source"])):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_config_has_what_the_book_needs():
    assert CONFIG["execute"]["execute_notebooks"] == "cache" and CONFIG["execute"]["timeout"] >= 600
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["url"].startswith("https://github.com/")
    assert all(k in CONFIG for k in ("title", "author", "copyright"))
    assert TOC["format"] == "jb-book" and TOC.get("parts"), "the toc is organised in parts"


def test_readme_documents_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme and "LLMBOOK_DATA" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_workflows_test_publish_and_run_weekly_with_the_readme_commands():
    flows = {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / ".github" / "workflows").glob("*.yml")}

    def steps(flow):
        return [s for job in flow["jobs"].values() for s in job.get("steps", [])]

    def runs(flow):
        return "\n".join(s.get("run", "") for s in steps(flow))

    def triggers(flow):
        return flow.get("on", flow.get(True)) or {}  # YAML reads a bare `on:` key as True

    assert any("make test" in runs(f) and "push" in triggers(f) for f in flows.values()), "no test workflow"
    publish = [f for f in flows.values() if any("deploy-pages" in s.get("uses", "") for s in steps(f))]
    assert publish and "make book" in runs(publish[0]), "no workflow builds the book and publishes it"
    assert triggers(publish[0])["push"]["branches"] == ["main"], "the site is published from main"
    assert any("schedule" in triggers(f) and "make test" in runs(f) for f in flows.values()), "no weekly run"


MAX_CODE_LINE = 88  # the book's code-line limit (DESIGN.md): no horizontal scroll bar


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_lines_fit_the_page(path):
    too_long = [
        f"  cell {index}, line {number}: {len(line)} characters: {line[:60]}..."
        for index, cell in enumerate(load(path)["cells"])
        if cell["cell_type"] == "code"
        for number, line in enumerate("".join(cell["source"]).splitlines(), start=1)
        if len(line) > MAX_CODE_LINE
    ]
    assert not too_long, (
        f"{path.relative_to(ROOT)}: {len(too_long)} code lines over {MAX_CODE_LINE} "
        "characters (ruff format --line-length 88, then split comments and strings):\n"
        + "\n".join(too_long)
    )


MAX_CELL_LINES = 25  # a code cell a reader sees at once (DESIGN.md, "Code a reader can read")
MAX_DEFINITION_LINES = 50  # a longer cell is allowed only if it is the thing being taught
HIDDEN_INPUT = {"hide-input", "remove-input", "remove-cell", "hide-cell"}
CHAPTERS = [p for p in NOTEBOOKS if p.parent.name == "chapters"]


def visible_code_cells(path):
    """(index, cell, source) of the code cells whose code the site shows."""
    for index, cell in enumerate(load(path)["cells"]):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] == "code" and not HIDDEN_INPUT & tags:
            yield index, cell, "".join(cell["source"])


def cell_length(source: str) -> tuple[int, float]:
    """(lines a reader reads, share of them inside top-level def/class).

    Blank lines and import statements are not counted: a list of imports is read at a
    glance. Decorators and docstrings count as part of their definition.
    """
    tree = ast.parse(source)
    imports: set[int] = set()
    definitions: set[int] = set()
    for node in tree.body:
        span = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports |= span
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            definitions |= set(range(start, (node.end_lineno or node.lineno) + 1))
    read = [
        number
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and number not in imports
    ]
    inside = sum(1 for number in read if number in definitions)
    return len(read), (inside / len(read) if read else 0.0)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_cells_a_reader_sees_are_short(path):
    """A visible cell over 25 lines must be a definition (the thing taught), up to 50.

    Drawing, table printing and other plumbing go to the library or a `hide-input` cell;
    an experiment that grew long is split at its seams, with a sentence between.
    """
    too_long = []
    for index, _cell, source in visible_code_cells(path):
        lines, in_definitions = cell_length(source)
        if lines <= MAX_CELL_LINES:
            continue
        if in_definitions >= 0.8 and lines <= MAX_DEFINITION_LINES:
            continue
        first = next(line for line in source.splitlines() if line.strip())
        too_long.append(
            f"  cell {index}: {lines} lines, {in_definitions:.0%} in def/class: {first[:50]}"
        )
    assert not too_long, (
        f"{path.relative_to(ROOT)}: {len(too_long)} visible code cells over "
        f"{MAX_CELL_LINES} lines that are not a definition of at most "
        f"{MAX_DEFINITION_LINES} lines (80 % in def/class). Split them at their seams, "
        "move drawing and table printing to llmbook.viz or tag the cell hide-input:\n"
        + "\n".join(too_long)
    )


MAX_DRAWING_LINES = 10  # matplotlib lines a reader may see in one cell
_DRAWING = re.compile(r"^\s*(plt|fig|ax\w*|axes\w*|twin|cbar)\b")


def drawing_lines(source: str) -> int:
    """Lines of top-level statements that draw: calls on plt/fig/ax, and loops of them."""
    tree = ast.parse(source)
    count = 0
    for node in tree.body:
        segment = ast.get_source_segment(source, node) or ""
        body = getattr(node, "body", None) if isinstance(node, ast.For) else None
        draws = bool(_DRAWING.match(segment)) or bool(
            body and all(_DRAWING.match(ast.get_source_segment(source, b) or "") for b in body)
        )
        if draws:
            count += segment.count("\n") + 1
    return count


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_figure_drawing_is_hidden(path):
    """A figure's drawing code is plumbing: the reader sees the figure, and the code behind
    a "show code" toggle (`hide-input`), or a library call (llmbook.viz)."""
    shown = [
        f"  cell {index} ({cell.get('id')}): {lines} lines of drawing"
        for index, cell, source in visible_code_cells(path)
        if (lines := drawing_lines(source)) >= MAX_DRAWING_LINES
    ]
    assert not shown, (
        f"{path.relative_to(ROOT)}: figure drawing in view; move it to its own cell tagged "
        "hide-input (or into llmbook.viz):\n" + "\n".join(shown)
    )


LAB_VOICE = re.compile(
    r"\b(in our (runs?|trials?)|in (my|these) runs?|honestly|I (ran|tried|found|measured|saw))\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_prose_teaches_instead_of_reporting_a_run(path):
    """The book's voice (DESIGN.md): "we measure ...", not a lab report's "in our runs ..."."""
    found = [
        f"  cell {index}: ...{text[max(0, m.start() - 40):m.end() + 40]}..."
        for index, cell in enumerate(load(path)["cells"])
        if cell["cell_type"] == "markdown"
        for text in ["".join(cell["source"]).replace("\n", " ")]
        for m in LAB_VOICE.finditer(text)
    ]
    assert not found, f"{path.relative_to(ROOT)}: lab-report voice in the prose:\n" + "\n".join(found)
