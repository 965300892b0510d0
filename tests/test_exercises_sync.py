"""exercises/ is exactly what the generator makes from solutions/, and neither leaks nor
loses anything: every solutions notebook is checkable, every exercise notebook is blank."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmbook.exercises import checks_for_chapter
from llmbook.exercises.grader import chapter_of

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "tools" / "make_exercises.py"


def _generator():
    """tools/make_exercises.py, imported from its file (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_exercises", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _generator()
BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION = (
    make.BEGIN_HIDDEN, make.BEGIN_SOLUTION, make.END_HIDDEN, make.END_SOLUTION)
STUB, MarkerError, main, render, strip_solutions = (
    make.STUB, make.MarkerError, make.main, make.render, make.strip_solutions)

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)


def _cells(path: Path, kind: str = "code") -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


def _solution_regions(source: str) -> list[list[str]]:
    """The lines inside each BEGIN/END SOLUTION pair of one cell."""
    regions, current = [], None
    for line in source.splitlines():
        if line.strip() == BEGIN_SOLUTION:
            current = []
        elif line.strip() == END_SOLUTION:
            regions.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return regions


def test_there_are_solutions_notebooks() -> None:
    assert SOLUTIONS, "solutions/ has no notebooks"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_exercises_are_generated_byte_for_byte(solution: Path) -> None:
    exercise = ROOT / "exercises" / solution.name
    assert exercise.is_file(), f"run `python tools/make_exercises.py` to create {exercise}"
    assert exercise.read_text(encoding="utf-8") == render(solution), (
        f"{exercise} is out of date: run `python tools/make_exercises.py`"
    )


def test_no_exercise_notebook_lacks_its_solution() -> None:
    names = {p.name for p in SOLUTIONS}
    orphans = [p.name for p in (ROOT / "exercises").glob("*.ipynb") if p.name not in names]
    assert not orphans, f"exercises/ without solutions/: {orphans}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_are_checkable(solution: Path) -> None:
    cells = _cells(solution)
    check_cells = [c for c in cells if "check(" in c]
    assert len(check_cells) >= 3, "an exercise notebook needs at least three check cells"
    assert any("from llmbook.exercises import check" in c for c in cells)
    for index, source in enumerate(cells):
        strip_solutions(source, where=f"{solution.name} code cell {index}")  # balanced
    assert sum(len(_solution_regions(c)) for c in cells) >= 3
    first = cells[0]
    assert '"google.colab" in sys.modules' in first and "%pip install" in first


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_every_registered_check_of_the_chapter_is_in_the_notebook(solution: Path) -> None:
    nb = json.loads(solution.read_text(encoding="utf-8"))
    chapter = chapter_of(solution, nb)
    assert chapter and solution.name.startswith(f"{chapter}_")
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    called = set(re.findall(r"""check\(\s*["']([\w.]+)["']""", "".join(_cells(solution))))
    expected = {c.name for c in checks_for_chapter(chapter)}
    assert expected, f"no checks registered for chapter {chapter}"
    assert expected <= called, f"checks the grader expects but the notebook never runs: {expected - called}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_exercise_notebooks_keep_no_solution_text(solution: Path) -> None:
    exercise = ROOT / "exercises" / solution.name
    text = exercise.read_text(encoding="utf-8")
    nb = json.loads(text)
    code = "".join(_cells(exercise))
    assert not any(marker in code for marker in MARKERS)
    regions = [r for c in _cells(solution) for r in _solution_regions(c)]
    assert code.count(STUB) == len(regions)
    for region in regions:
        for line in region:
            # Lines that say something (not `return x` alone) must not survive anywhere.
            if len(line.strip()) > 20:
                assert line.strip() not in code, f"solution line left in {exercise.name}: {line}"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_strip_solutions_keeps_signature_and_indentation() -> None:
    source = (
        "def f(x):\n"
        '    """Doc."""\n'
        "    ### BEGIN SOLUTION\n"
        "    y = x + 1\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "result = check('a.b', f)\n"
        "### BEGIN HIDDEN TESTS\n"
        "assert result.passed\n"
        "### END HIDDEN TESTS"
    )
    assert strip_solutions(source) == (
        "def f(x):\n"
        '    """Doc."""\n'
        f"    {STUB}\n"
        "\n"
        "result = check('a.b', f)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "### BEGIN SOLUTION\nx = 1\n",
        "x = 1\n### END SOLUTION\n",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION\n",
        "### BEGIN SOLUTION\nx = 1\n### END HIDDEN TESTS\n",
    ],
)
def test_unbalanced_markers_are_refused(source: str) -> None:
    with pytest.raises(MarkerError):
        strip_solutions(source)


def test_check_mode_reports_stale_files_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "solutions").mkdir()
    source = SOLUTIONS[0]
    (tmp_path / "solutions" / source.name).write_bytes(source.read_bytes())
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert source.name in capsys.readouterr().out
    assert not (tmp_path / "exercises").exists()
    assert main(["--root", str(tmp_path)]) == 0
    written = (tmp_path / "exercises" / source.name).read_bytes()
    assert written == (ROOT / "exercises" / source.name).read_bytes()
    assert main(["--root", str(tmp_path), "--check"]) == 0
    assert main(["--root", str(tmp_path)]) == 0  # regenerating changes nothing
    assert (tmp_path / "exercises" / source.name).read_bytes() == written


def test_the_generator_runs_as_a_script_from_anywhere(tmp_path: Path) -> None:
    """`python tools/make_exercises.py --check` is the README's command; it finds the
    repository from its own location, not from the current directory."""
    done = subprocess.run([sys.executable, str(GENERATOR), "--check"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout
