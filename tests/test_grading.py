"""The grading system: ``check`` survives bad answers and finds each chapter's checks without
importing the others', and the grader scores whole notebooks honestly (full, zero, partial)
whatever the notebook does. What each chapter's checks accept and turn down is in
test_exercises_checks.py and its tables."""

from __future__ import annotations

import json
import math
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from llmbook.exercises import CheckResult, check, checks_for_chapter, registry
from llmbook.exercises.core import CHECK_MODULES, CHECKS_PACKAGE, TIMEOUT_ENV
from llmbook.exercises.grader import chapter_of, main

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions" / "01_what_is_an_llm.ipynb"
EXERCISES = ROOT / "exercises" / "01_what_is_an_llm.ipynb"
CHAPTER_01 = [c.name for c in checks_for_chapter("01")]

on_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"),
    reason="check time limits use SIGALRM, which needs the main thread of a Unix process",
)


# --------------------------------------------------------------------------- check()


def test_a_check_prints_its_verdict_and_returns_it(capsys: pytest.CaptureFixture[str]) -> None:
    passed = check("intro.perplexity", math.exp)
    failed = check("intro.perplexity", lambda loss: 2**loss)
    assert isinstance(passed, CheckResult) and passed and passed.points == passed.max_points == 1
    assert passed.seconds >= 0
    assert not failed and failed.points == 0 and failed.max_points == 1
    out = capsys.readouterr().out
    assert "✅ intro.perplexity: passed (1/1 point" in out
    assert "❌ intro.perplexity: not passed yet (0/1 point)" in out


def test_an_answer_that_raises_is_a_failure_with_the_error_not_a_crash() -> None:
    result = check("intro.perplexity", lambda loss: 1 / 0)
    assert not result.passed
    assert "ZeroDivisionError" in result.feedback and "perplexity(0.0)" in result.feedback


def test_not_implemented_says_you_have_not_written_it_yet() -> None:
    def stub(loss: float) -> float:
        raise NotImplementedError("Write your solution here")

    result = check("intro.perplexity", stub)
    assert not result.passed and "not written this yet" in result.feedback


@on_main_thread
def test_a_hanging_answer_is_stopped_near_the_limit_and_the_alarm_is_restored() -> None:
    def hang(loss: float) -> float:
        while True:
            try:  # noqa: SIM105 - written as a learner would: a catch-all must not stop the limit
                pass
            except Exception:
                pass

    def previous_handler(signum: int, frame: Any) -> None:
        raise AssertionError("the previous SIGALRM handler must not be called")

    old = signal.signal(signal.SIGALRM, previous_handler)
    try:
        started = time.monotonic()
        result = check("intro.perplexity", hang, timeout=1.0)
        elapsed = time.monotonic() - started
        assert signal.getsignal(signal.SIGALRM) is previous_handler
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not result.passed and "longer than 1 s" in result.feedback
    assert 0.9 <= elapsed < 2.5


@on_main_thread
def test_the_time_limit_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    started = time.monotonic()
    result = check("intro.perplexity", lambda loss: time.sleep(30))
    assert time.monotonic() - started < 2.0
    assert not result.passed and "longer than 0.5 s" in result.feedback


def test_off_the_main_thread_checks_run_without_a_limit() -> None:
    def slow_but_right(loss: float) -> float:
        time.sleep(0.05)
        return math.exp(loss)

    results: list[CheckResult] = []
    worker = threading.Thread(
        target=lambda: results.append(check("intro.perplexity", slow_but_right, timeout=0.01))
    )
    worker.start()
    worker.join(30)
    assert results and results[0].passed


def test_an_unknown_name_lists_the_known_checks_of_its_chapter() -> None:
    with pytest.raises(KeyError) as err:
        check("intro.perplexityy", math.exp)
    message = str(err.value)
    assert "intro.perplexityy" in message
    assert all(name in message for name in CHAPTER_01)


def test_an_unknown_concept_lists_the_concepts_and_their_chapters() -> None:
    with pytest.raises(KeyError) as err:
        check("intor.perplexity", math.exp)
    assert "intor.perplexity" in str(err.value)
    assert "intro (chapter 01)" in str(err.value) and "scaling (chapter 12)" in str(err.value)


# --------------------------------------------------------------------------- one module per chapter


def test_every_check_module_is_mapped_and_registers_its_own_chapter_only() -> None:
    package = __import__(CHECKS_PACKAGE, fromlist=["_"])
    files = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert files == set(CHECK_MODULES.values())
    for check_ in registry().values():
        concept = check_.name.partition(".")[0]
        module = CHECK_MODULES[concept]
        assert check_.checker.__module__ == f"{CHECKS_PACKAGE}.{module}", check_.name
        assert module.startswith(f"ch{check_.chapter}_"), check_.name


# Run in a fresh interpreter: this process has imported every chapter's module already.
ISOLATION = """
import json, sys
import torch.nn.functional as F
from llmbook.exercises import check, checks_for_chapter

loaded = lambda: sorted(m.rpartition(".")[2] for m, module in sys.modules.items()
                        if m.startswith("llmbook.exercises.checks.") and module is not None)
names = [c.name for c in checks_for_chapter("07")]
passed = bool(check("gpt.rms_norm", lambda x, w, eps: x * (x * x).mean(-1, keepdim=True).add(eps).rsqrt() * w))
after_ch07 = loaded()
sys.modules["llmbook.exercises.checks.ch02_embeddings"] = None  # a chapter whose module is broken
try:
    check("embeddings.analogy", None)
    broken = "no error"
except ImportError as err:
    broken = type(err).__name__
still = bool(check("intro.perplexity", __import__("math").exp))
print(json.dumps({"names": names, "passed": passed, "after_ch07": after_ch07, "broken": broken,
                  "still": still, "finally": loaded()}))
"""


def test_a_check_imports_its_own_chapters_module_only() -> None:
    done = subprocess.run([sys.executable, "-c", ISOLATION], capture_output=True, text=True,
                          timeout=300, env=os.environ.copy(), check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["names"][0] == "gpt.rms_norm" and result["passed"]
    assert result["after_ch07"] == ["ch07_gpt"]
    # A chapter whose module cannot be imported fails its own checks, and only those.
    assert result["broken"] in ("ImportError", "ModuleNotFoundError")
    assert result["still"]
    assert result["finally"] == ["ch01_intro", "ch07_gpt"]


def test_chapter_comes_from_metadata_then_the_file_name() -> None:
    assert chapter_of(Path("anything.ipynb"), {"metadata": {"llmbook": {"chapter": "1"}}}) == "01"
    assert chapter_of(Path("03_attention.ipynb"), {"metadata": {}}) == "03"
    assert chapter_of(Path("notes.ipynb"), None) is None


# --------------------------------------------------------------------------- grader end to end

# Small limits keep these tests fast: a check stops learner code after 2 s, and the
# per-cell limit only needs to be generous enough for `import torch` on a busy machine.
FAST = ["--check-timeout", "2", "--cell-timeout", "30", "--total-timeout", "120"]


def _solutions() -> dict[str, Any]:
    return json.loads(SOLUTIONS.read_text(encoding="utf-8"))


def _cell(nb: dict[str, Any], cell_id: str) -> dict[str, Any]:
    return next(c for c in nb["cells"] if c.get("id") == cell_id)


def _code_cell(cell_id: str, source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {},
            "outputs": [], "source": source}


def _replace_body(nb: dict[str, Any], cell_id: str, old: str, new: str) -> None:
    cell = _cell(nb, cell_id)
    source = "".join(cell["source"])
    assert old in source, f"{old!r} not in cell {cell_id}"
    cell["source"] = source.replace(old, new)


def _insert_after(nb: dict[str, Any], cell_id: str, new_cell: dict[str, Any]) -> None:
    nb["cells"].insert(nb["cells"].index(_cell(nb, cell_id)) + 1, new_cell)


def _grade(tmp_path: Path, nb: dict[str, Any] | None, *extra: str) -> dict[str, Any]:
    path = tmp_path / "01_what_is_an_llm.ipynb"
    if nb is not None:
        path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    out = tmp_path / "report.json"
    assert main([str(path), "--out", str(out), *FAST, *extra]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [c["name"] for c in report["checks"]] == CHAPTER_01
    assert report["max_score"] == len(CHAPTER_01)
    return report


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_cli_gives_the_reference_solutions_full_marks(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "llmbook.exercises.grader", str(SOLUTIONS), "--out", str(out),
         *FAST],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(), check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["chapter"] == "01"
    assert report["score"] == report["max_score"] == len(CHAPTER_01), report
    assert all(c["passed"] and c["points"] == c["max_points"] for c in report["checks"])
    assert f"Score: {len(CHAPTER_01)}/{len(CHAPTER_01)}" in done.stdout


def test_untouched_exercises_score_zero(tmp_path: Path) -> None:
    nb = json.loads(EXERCISES.read_text(encoding="utf-8"))
    report = _grade(tmp_path, nb)
    assert report["score"] == 0
    assert all("not written this yet" in c["feedback"] for c in report["checks"])


def test_one_wrong_answer_scores_partial_and_printing_cannot_fake_a_pass(
    tmp_path: Path,
) -> None:
    nb = _solutions()
    _replace_body(nb, "parameters-solution", "return embeddings + n_layer * block + layer_norm",
                  "return embeddings + n_layer * block + layer_norm + vocab_size * d")
    _replace_body(nb, "parameters-check", "assert result.passed, result.feedback\n", "")
    _insert_after(nb, "parameters-check",
                  _code_cell("fake", 'print("✅ intro.count_parameters: passed (1/1 point)")'))
    report = _grade(tmp_path, nb)
    assert 0 < report["score"] < report["max_score"]
    params = _by_name(report)["intro.count_parameters"]
    assert not params["passed"] and params["points"] == 0
    assert "lm_head" in params["feedback"]


def test_a_hang_costs_only_its_own_exercise(tmp_path: Path) -> None:
    nb = _solutions()
    # A function that never returns: the check's own time limit stops it.
    _replace_body(nb, "softmax-solution", "    ### BEGIN SOLUTION\n",
                  "    ### BEGIN SOLUTION\n    while True:\n        pass\n")
    _replace_body(nb, "softmax-check", "assert result.passed, result.feedback\n", "")
    # A top-level cell that never ends: the per-cell limit interrupts it, and the run goes on.
    _insert_after(nb, "parameters-check", _code_cell("spin", "while True:\n    pass"))
    started = time.monotonic()
    report = _grade(tmp_path, nb, "--cell-timeout", "8")
    assert time.monotonic() - started < 90
    checks = _by_name(report)
    assert not checks["intro.softmax_with_temperature"]["passed"]
    assert "longer than 2 s" in checks["intro.softmax_with_temperature"]["feedback"]
    assert report["score"] == report["max_score"] - 1
    assert checks["intro.perplexity"]["passed"]  # ran after the interrupted cell
    assert any("ran longer than 8 s" in p for p in report["problems"])


def test_a_dead_kernel_keeps_the_points_already_earned(tmp_path: Path) -> None:
    nb = _solutions()
    _insert_after(nb, "softmax-check", _code_cell("crash", "import os\nos._exit(1)"))
    report = _grade(tmp_path, nb)
    checks = _by_name(report)
    assert checks["intro.char_tokenizer"]["passed"]
    assert checks["intro.softmax_with_temperature"]["passed"]
    for name in ("intro.count_parameters", "intro.perplexity"):
        assert checks[name]["points"] == 0
        assert "kernel died" in checks[name]["feedback"]
    assert report["score"] == 2


def test_an_unreadable_notebook_still_gets_a_report(tmp_path: Path) -> None:
    (tmp_path / "01_what_is_an_llm.ipynb").write_text("{ this is not json", encoding="utf-8")
    report = _grade(tmp_path, None)
    assert report["score"] == 0
    assert any("could not be read" in p for p in report["problems"])


def test_the_total_time_limit_ends_grading_with_a_report(tmp_path: Path) -> None:
    started = time.monotonic()
    report = _grade(tmp_path, _solutions(), "--total-timeout", "1")
    assert time.monotonic() - started < 30
    assert report["score"] < report["max_score"]
    assert any("total time limit" in p or "ran longer" in p for p in report["problems"])


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "missing.ipynb")])
    assert err.value.code == 2


def test_a_missing_grader_dependency_names_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "nbclient", None)  # as if it were not installed
    notebook = tmp_path / "01_what_is_an_llm.ipynb"
    notebook.write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit) as err:
        main([str(notebook), "--out", str(tmp_path / "report.json")])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "nbclient" in message and 'pip install "llmbook[grade]"' in message
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb") if p.name[:2] != "01")
)
def test_every_chapters_solutions_score_full_and_its_exercises_zero(tmp_path: Path, name: str) -> None:
    """Chapter 1 is covered in depth above; every other chapter gets the same two guarantees."""
    chapter = name[:2]
    expected = [c.name for c in checks_for_chapter(chapter)]
    assert len(expected) >= 3, f"chapter {chapter} has fewer than three graded exercises"
    for folder, want in (("solutions", len(expected)), ("exercises", 0)):
        out = tmp_path / f"{folder}.json"
        limits = ["--check-timeout", "30", "--cell-timeout", "120", "--total-timeout", "300"]
        assert main([str(ROOT / folder / name), "--out", str(out), *limits]) == 0
        report = json.loads(out.read_text(encoding="utf-8"))
        assert [c["name"] for c in report["checks"]] == expected
        assert report["score"] == want, (folder, report)
