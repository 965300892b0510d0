"""Only the learner's answers earn points: the grader judges every check in its own process
and takes nothing but the values the learner's functions return from the notebook's kernel.

Every chapter's table of answers (test_exercises_checks.py) is also judged remotely, with the
same verdicts and feedback as in the notebook.

Each attack below is a small notebook (chapter 5's exercises with every function answering
``torch.zeros(1)``, plus the attack's cell) that would have forged a pass had the kernel
reported its own verdicts; every one must score zero. The reference solutions still score
full marks, an untouched exercise notebook zero, and one wrong answer part of them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_exercises_checks import CORRECT, MISTAKES

from llmbook.exercises import CheckResult, checks_for_chapter, registry
from llmbook.exercises.grader import main
from llmbook.exercises.remote import AnswerServer, serve

ROOT = Path(__file__).resolve().parents[1]
NAME = "05_attention.ipynb"
CHAPTER_05 = [c.name for c in checks_for_chapter("05")]
STUB = 'raise NotImplementedError("Write your solution here")'
FAST = ["--check-timeout", "2", "--cell-timeout", "30", "--total-timeout", "120"]

FORGED = f"""
import glob, json, os
names = {CHAPTER_05!r}
lines = "".join(json.dumps({{"name": n, "passed": True, "points": 1, "max_points": 1,
                             "feedback": "forged", "seconds": 0.0}}) + "\\n" for n in names)
private = os.path.dirname(os.environ.get("LLMBOOK_GRADE_SOCKET", ""))  # the grader's own folder
paths = [os.environ.get("LLMBOOK_GRADE_REPORT"), "checks.jsonl",
         *(glob.glob(os.path.join(private, "*")) + [os.path.join(private, "checks.jsonl")] if private else [])]
for path in filter(None, paths):
    try:
        with open(path, "a") as f:
            f.write(lines)
    except OSError:
        pass
"""

PATCH_CHECK = """
import llmbook.exercises as ex
import llmbook.exercises.core as core
import llmbook.exercises.remote as remote

def forged(name, answer=None, *args, **kwargs):
    result = core.CheckResult(name, True, 1, 1, "forged", 0.0)
    print(core._format(result))
    return result

core._run = lambda check_, answer, limit: (True, "forged")
remote.serve = lambda check_, answer, limit, path: forged(check_.name)
core.check = ex.check = check = forged
"""

PATCH_COMPARISONS = """
import builtins, torch
import llmbook.exercises.compare as compare
import llmbook.exercises.checks.ch05_attention as ch05
torch.allclose = torch.equal = lambda *a, **k: True
for module in (compare, ch05):
    module.same = module.matches = lambda *a, **k: True
    module.tensor_answer = lambda value, *a, **k: value
    module.known_mistake = lambda *a, **k: None
builtins.all = builtins.any = lambda *a, **k: True
builtins.abs = lambda x: 0.0
"""

PRINT_FAKE = "\n".join(
    [f'print("✅ {n}: passed (1/1 point, 0.01 s).")' for n in CHAPTER_05] + ['print("Score: 4/4")'])

SOCKET = f"""
import json, os, socket, struct
def send(sock, message):
    data = json.dumps(message).encode()
    sock.sendall(struct.pack("!Q", len(data)) + data)
for name in {CHAPTER_05!r}:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.environ["LLMBOOK_GRADE_SOCKET"])
        send(sock, {{"op": "hello", "name": name, "answer": True}})
        send(sock, {{"op": "done", "result": {{"name": name, "passed": True, "points": 1}}}})
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:  # garbage, then a huge length
    sock.connect(os.environ["LLMBOOK_GRADE_SOCKET"])
    sock.sendall(struct.pack("!Q", 2**62) + b"not json")
"""


def _notebook(folder: str) -> dict[str, Any]:
    return json.loads((ROOT / folder / NAME).read_text(encoding="utf-8"))


def _zeros() -> dict[str, Any]:
    """The exercises with every function written, wrongly: each returns torch.zeros(1)."""
    nb = _notebook("exercises")
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        cell["source"] = source.replace(STUB, "return torch.zeros(1)")
    return nb


def _cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": f"attack{abs(hash(source)) % 10**8}",
            "metadata": {}, "outputs": [], "source": source}


def _imports_index(nb: dict[str, Any]) -> int:
    return next(i for i, c in enumerate(nb["cells"])
                if "from llmbook.exercises import check" in "".join(c["source"]))


def _grade(tmp_path: Path, nb: dict[str, Any], *extra: str) -> dict[str, Any]:
    path = tmp_path / NAME
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    out = tmp_path / "report.json"
    assert main([str(path), "--out", str(out), *FAST, *extra]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [c["name"] for c in report["checks"]] == CHAPTER_05
    return report


ATTACKS = {
    "forge_the_report_file": (FORGED, "start"),
    "patch_check_core_and_remote": (PATCH_CHECK, "start"),
    "patch_comparisons_torch_and_builtins": (PATCH_COMPARISONS, "start"),
    "print_a_fake_report": (PRINT_FAKE, "end"),
    "talk_to_the_grader_socket": (SOCKET, "start"),
    "forge_then_os_exit": (FORGED + "\nos._exit(0)\n", "end"),
    "forge_then_kill_the_kernel": (FORGED + "\nimport signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "end"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_from_the_notebook_scores_zero(tmp_path: Path, attack: str) -> None:
    source, where = ATTACKS[attack]
    nb = _zeros()
    nb["cells"].insert(_imports_index(nb) + 1 if where == "start" else len(nb["cells"]), _cell(source))
    report = _grade(tmp_path, nb)
    assert report["score"] == 0, report
    assert not any(c["passed"] for c in report["checks"])


def test_answers_that_hang_and_a_cell_that_never_ends_score_zero_in_bounded_time(tmp_path: Path) -> None:
    nb = _notebook("exercises")
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        cell["source"] = source.replace(STUB, "while True:\n        pass")
    nb["cells"].insert(_imports_index(nb) + 1, _cell(FORGED))
    nb["cells"].append(_cell(FORGED + "\nwhile True:\n    pass\n"))
    started = time.monotonic()
    report = _grade(tmp_path, nb, "--cell-timeout", "8")
    assert time.monotonic() - started < 90
    assert report["score"] == 0
    assert all("longer than 2 s" in c["feedback"] for c in report["checks"]), report


def test_the_reference_solutions_score_full_marks_even_with_garbage_on_the_socket(tmp_path: Path) -> None:
    nb = _notebook("solutions")
    nb["cells"].insert(_imports_index(nb) + 1, _cell(SOCKET))
    report = _grade(tmp_path, nb, "--check-timeout", "30")  # the experiment trains
    assert report["score"] == report["max_score"] == len(CHAPTER_05), report
    assert report["problems"] == []


def test_untouched_exercises_score_zero_and_say_not_written(tmp_path: Path) -> None:
    report = _grade(tmp_path, _notebook("exercises"))
    assert report["score"] == 0
    assert all("not written this yet" in c["feedback"] for c in report["checks"]), report


def test_wrong_answers_score_partial_with_the_feedback_the_notebook_gives(tmp_path: Path) -> None:
    nb = _notebook("solutions")
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        # Exercise 2 right but scaling q in place; exercise 4 without the output bias.
        source = source.replace("scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
                                "scores = q.div_(math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)")
        source = source.replace("return merge_heads(y) @ w_proj.T + b_proj", "return merge_heads(y) @ w_proj.T")
        cell["source"] = source.replace("assert result.passed, result.feedback\n", "")
    report = _grade(tmp_path, nb, "--check-timeout", "30")
    checks = {c["name"]: c for c in report["checks"]}
    assert report["score"] == 2
    assert checks["attention.sliding_window_mask"]["passed"] and checks["attention.look_back_experiment"]["passed"]
    sdp = checks["attention.left_padded_attention"]
    assert not sdp["passed"] and "its argument `q` in place" in sdp["feedback"], sdp
    mha = checks["attention.multi_head"]
    assert not mha["passed"] and "you left out the output projection's bias" in mha["feedback"], mha
    assert "expected:" in mha["feedback"] and "got:" in mha["feedback"]


def test_the_kernel_works_in_a_folder_holding_only_the_notebook_with_its_memory_capped(
    tmp_path: Path,
) -> None:
    nb = _notebook("solutions")
    nb["cells"].insert(_imports_index(nb) + 1, _cell(
        "import os, pathlib, resource\n"
        "ok = (os.listdir('.') == ['05_attention.ipynb'] and not os.path.exists('../solutions')\n"
        "      and resource.getrlimit(resource.RLIMIT_AS)[0] == 4 * 2**30)\n"
        "pathlib.Path('junk.txt').write_text('x')\n"
        "try:\n"
        "    hog = bytearray(6 * 2**30)  # a MemoryError, not a machine out of memory\n"
        "    ok = False\n"
        "except MemoryError:\n"
        "    pass\n"))
    for cell in nb["cells"]:  # the first exercise passes only if every condition held
        cell["source"] = "".join(cell["source"]).replace(
            'check("attention.sliding_window_mask", sliding_window_mask)',
            'check("attention.sliding_window_mask", sliding_window_mask if ok else None)')
    report = _grade(tmp_path, nb, "--memory-limit", "4", "--check-timeout", "30")
    assert report["score"] == report["max_score"], report
    assert not (tmp_path / "junk.txt").exists()


# --------------------------------------------------------------------------- every check, judged remotely

# The chapters' tables (test_exercises_checks.py) judged the way the grader judges: the
# checker in a server thread, the answer served from this thread over the grader's socket.
# Every correct answer passes and every mistake fails with the feedback the table expects.




@pytest.fixture(scope="module")
def answer_server() -> Any:
    with tempfile.TemporaryDirectory(prefix="llmbook-test-") as folder:
        checks = registry()
        with AnswerServer(str(Path(folder) / "answers.sock"), checks, lambda c: 20.0) as server:
            yield server


def _judged_remotely(server: AnswerServer, name: str, answer: Any) -> CheckResult:
    result = serve(registry()[name], answer, 20.0, server.path)
    assert server.results[name] == result
    return result


@pytest.mark.parametrize(("name", "answer"), CORRECT)
def test_a_correct_answer_passes_when_judged_remotely(answer_server: AnswerServer, name: str, answer: Any) -> None:
    result = _judged_remotely(answer_server, name, answer)
    assert result.passed, result.feedback


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
@pytest.mark.parametrize(("name", "answer", "texts"), MISTAKES)
def test_a_mistake_gets_the_same_feedback_when_judged_remotely(
    answer_server: AnswerServer, name: str, answer: Any, texts: tuple[str, ...]
) -> None:
    result = _judged_remotely(answer_server, name, answer)
    assert not result.passed and result.points == 0
    for text in texts:
        assert text in result.feedback, f"{text!r} is not in the feedback:\n{result.feedback}"


# --------------------------------------------------------------------------- the wire


def test_the_wire_carries_plain_values_and_builds_nothing_else() -> None:
    import math

    import numpy as np
    import torch

    from llmbook.config import GPTConfig
    from llmbook.exercises import wire

    gen = torch.Generator().manual_seed(1)
    value = (None, True, 3, 2**70, -0.0, [1, 2], ["a", "b"], {"k": (1.5, b"x")}, {1, 2},
             torch.arange(6).reshape(2, 3), torch.tensor(1.5, dtype=torch.bfloat16), torch.zeros(0, 4),
             np.ones((2, 2), dtype=np.float32), np.int64(7), GPTConfig(n_layer=2), gen)
    back = wire.decode(json.loads(json.dumps(wire.encode(value))))
    assert back[:9] == value[:9] and math.copysign(1, back[4]) == -1
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(back[9:12], value[9:12], strict=True))
    assert back[12].dtype == np.float32 and (back[12] == 1).all() and back[13] == 7
    assert back[14] == GPTConfig(n_layer=2)
    assert torch.equal(torch.rand(3, generator=back[15]), torch.rand(3, generator=gen))
    assert math.isnan(wire.decode(wire.encode(float("nan"))))

    class Sneaky:
        def __eq__(self, other: object) -> bool:
            return True

    opaque = wire.decode(wire.encode([Sneaky(), torch.nn.Linear(2, 2), math.exp]))
    assert all(isinstance(o, wire.Opaque) for o in opaque) and opaque[0] != 1
    for bad in ({"$": "ndarray", "dtype": "O", "shape": [1], "data": ""},
                {"$": "dataclass", "type": "os.system", "fields": {}},
                {"$": "tensor", "dtype": "float32", "shape": [3], "data": "AAAA"},
                {"$": "list", "plain": [{"$": "opaque"}]}, {"$": "pickle"}, [1]):
        with pytest.raises(wire.WireError):
            wire.decode(bad)
