"""The grading system: ``check`` gives actionable feedback and survives bad answers, and the
grader scores whole notebooks honestly (full, zero, partial) whatever the notebook does."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from llmbook.exercises import CheckResult, check, checks_for_chapter
from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV
from llmbook.exercises.grader import chapter_of, main, read_report_lines

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions" / "01_what_is_an_llm.ipynb"
EXERCISES = ROOT / "exercises" / "01_what_is_an_llm.ipynb"
CHAPTER_01 = [c.name for c in checks_for_chapter("01")]

on_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"),
    reason="check time limits use SIGALRM, which needs the main thread of a Unix process",
)


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests must not write into a real grading report or inherit a time limit."""
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


# --------------------------------------------------------------------------- reference answers


def build_vocab(text: str) -> tuple[dict[str, int], dict[int, str]]:
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    return stoi, {i: c for c, i in stoi.items()}


def encode(text: str, stoi: dict[str, int]) -> list[int]:
    return [stoi[c] for c in text]


def decode(ids: list[int], itos: dict[int, str]) -> str:
    return "".join(itos[i] for i in ids)


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits / temperature
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def count_parameters(v: int, t: int, d: int, n: int) -> int:
    return v * d + t * d + n * (12 * d * d + 13 * d) + 2 * d


# --------------------------------------------------------------------------- check(): unit tests


def test_correct_answers_pass_and_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    answers = {
        "intro.char_tokenizer": (build_vocab, encode, decode),
        "intro.softmax_with_temperature": softmax_with_temperature,
        "intro.count_parameters": count_parameters,
        "intro.perplexity": math.exp,
    }
    assert sorted(answers) == sorted(CHAPTER_01)
    for name, answer in answers.items():
        result = check(name, answer)
        assert isinstance(result, CheckResult)
        assert result.passed and result.points == result.max_points == 1, result.feedback
        assert result.seconds >= 0
    out = capsys.readouterr().out
    assert out.count("✅") == 4 and "❌" not in out


def test_wrong_perplexity_names_the_input_the_values_and_the_mistake() -> None:
    result = check("intro.perplexity", lambda loss: 2**loss)
    assert not result.passed and result.points == 0 and result.max_points == 1
    assert "perplexity(" in result.feedback
    assert "expected" in result.feedback and "got" in result.feedback
    assert "math.exp" in result.feedback  # the hint: nats need e, not 2


def test_wrong_perplexity_on_ln65_explains_the_uniform_guess() -> None:
    # Right everywhere except near ln 65, so the ln 65 case is the one that fails.
    result = check("intro.perplexity", lambda x: math.exp(x) + (1.0 if 4 < x < 5 else 0.0))
    assert not result.passed
    assert "65" in result.feedback and "uniformly" in result.feedback


@pytest.mark.parametrize(
    ("mistake", "hint"),
    [
        (lambda v, t, d, n: count_parameters(v, t, d, n) + v * d, "lm_head"),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - t * d, "position embeddings"),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - 9 * n * d, "biases"),
        (lambda v, t, d, n: count_parameters(v, t, d, n) - n * 13 * d - 2 * d, "layer norms"),
    ],
)
def test_count_parameters_recognises_mistakes_by_the_size_of_the_error(mistake, hint) -> None:
    result = check("intro.count_parameters", mistake)
    assert not result.passed
    assert "124,439,808" in result.feedback  # GPT-2 small is tried first
    assert hint in result.feedback


def test_count_parameters_wants_an_int() -> None:
    result = check("intro.count_parameters", lambda *a: float(count_parameters(*a)))
    assert not result.passed and "int" in result.feedback


def test_softmax_feedback_points_at_the_missing_max_and_the_ignored_temperature() -> None:
    def unstable(logits: torch.Tensor, temperature: float) -> torch.Tensor:
        e = torch.exp(logits / temperature)
        return e / e.sum(dim=-1, keepdim=True)

    result = check("intro.softmax_with_temperature", unstable)
    assert not result.passed and "subtract the max" in result.feedback

    result = check("intro.softmax_with_temperature", lambda x, t: softmax_with_temperature(x, 1.0))
    assert not result.passed and "temperature" in result.feedback
    assert "divide" in result.feedback


def test_softmax_rejects_changing_the_callers_logits() -> None:
    def in_place(logits: torch.Tensor, temperature: float) -> torch.Tensor:
        logits -= logits.max(dim=-1, keepdim=True).values
        return softmax_with_temperature(logits, temperature)

    result = check("intro.softmax_with_temperature", in_place)
    assert not result.passed and "in-place" in result.feedback


def test_tokenizer_feedback_for_first_seen_order_and_missing_join() -> None:
    def first_seen(text: str) -> tuple[dict[str, int], dict[int, str]]:
        stoi = {c: i for i, c in enumerate(dict.fromkeys(text))}
        return stoi, {i: c for c, i in stoi.items()}

    result = check("intro.char_tokenizer", (first_seen, encode, decode))
    assert not result.passed and "sorted(set(text))" in result.feedback

    result = check("intro.char_tokenizer", (build_vocab, encode, lambda ids, itos: list(ids)))
    assert not result.passed and "''.join" in result.feedback

    result = check("intro.char_tokenizer", build_vocab)  # forgot to pass all three
    assert not result.passed and "(build_vocab, encode, decode)" in result.feedback


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
            try:
                pass
            except Exception:  # noqa: BLE001, S110 - a learner's catch-all must not stop the limit
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


def test_every_check_appends_a_synced_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "checks.jsonl"
    monkeypatch.setenv(REPORT_ENV, str(report))
    check("intro.perplexity", math.exp)
    print("✅ intro.count_parameters: passed")  # printing a pass writes nothing
    check("intro.count_parameters", lambda *a: 0)
    lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert [line["name"] for line in lines] == ["intro.perplexity", "intro.count_parameters"]
    assert [line["passed"] for line in lines] == [True, False]
    assert set(lines[0]) >= {"name", "passed", "points", "max_points", "feedback", "seconds"}


def test_report_reader_keeps_the_last_result_and_skips_torn_lines(tmp_path: Path) -> None:
    report = tmp_path / "checks.jsonl"
    first = {"name": "intro.perplexity", "passed": True, "points": 1}
    second = {"name": "intro.perplexity", "passed": False, "points": 0}
    report.write_text(
        json.dumps(first) + "\n" + json.dumps(second) + "\n" + '{"name": "intro.cou', "utf-8"
    )
    results = read_report_lines(report)
    assert list(results) == ["intro.perplexity"]
    assert results["intro.perplexity"]["passed"] is False


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
    assert "Score: 4/4" in done.stdout


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
