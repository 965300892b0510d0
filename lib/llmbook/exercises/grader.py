"""Grade a submitted exercise notebook headless and write a JSON score report.

    llmbook-grade 01_what_is_an_llm.ipynb --out report.json
    python -m llmbook.exercises.grader NOTEBOOK.ipynb [--cell-timeout 60] [--total-timeout 600]

The notebook runs top to bottom in a fresh kernel (nbclient, errors allowed, every cell
under a time limit and the whole run under another, its memory capped on Linux), in a
temporary folder that holds only a copy of it. The grade depends only on what the learner's functions compute, by
construction: the kernel never reports a verdict. The grader listens on a Unix socket in
a folder of its own (``LLMBOOK_GRADE_SOCKET``); each ``check(name, answer)`` in the
notebook connects and serves its answer, and the grader runs that check's checker here,
in its own process, calling the learner's functions through stand-ins that send the
checker's inputs to the kernel and read back only the returned values as plain data
(tensors as dtype, shape and bytes in JSON; never pickle: ``llmbook.exercises.wire``).
The comparison with the reference and the feedback happen here, so printing a pass,
writing or deleting files, patching ``check``, ``llmbook`` or builtins, talking to the
socket directly, or killing or hanging the kernel can change at most the values the
functions return, and wrong values earn nothing. A verdict is kept the moment it is
reached, so a kernel that dies halfway keeps the points already earned; a function that
hangs is stopped at the check's time limit (see ``llmbook.exercises.remote``). What this
cannot tell apart is how a right value was computed: a function that calls the library's
own implementation returns right values too.

The checks expected are all registered checks of the notebook's chapter (from its
metadata ``{"llmbook": {"chapter": "01"}}``, else its file name ``01_...``). A check
that never reported scores zero with a reason. Whatever the notebook does (raise, hang,
print garbage, kill its kernel, not even be JSON), the grader writes a report and exits
0; only a usage error (such as a missing file) exits 2, and so does a grader whose own
dependencies (the ``grade`` extra: nbclient, nbformat, ipykernel) are not installed, with
the command that installs them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbook.exercises.core import (
    SOCKET_ENV,
    TIMEOUT_ENV,
    Check,
    checks_for_chapter,
    normalise_chapter,
)
from llmbook.exercises.remote import AnswerServer

GRADE_DEPENDENCIES = ("nbclient", "nbformat", "ipykernel")
"""What the grader needs to run a notebook in a kernel, beyond llmbook's core dependencies:
the ``grade`` extra (check() itself needs none of it)."""
INSTALL_GRADE = 'pip install "llmbook[grade]"'

# The grader keeps only this much of a cell's output: enough to explain an error, and
# a notebook that prints without end cannot exhaust the grader's memory.
MAX_OUTPUTS_PER_CELL = 200
MEMORY_LIMIT = 8.0
"""GiB of address space the notebook's kernel may use (``--memory-limit``; Linux only)."""
MAX_OUTPUT_CHARS_PER_CELL = 200_000


def missing_dependencies() -> list[str]:
    """The grader's own dependencies (the ``grade`` extra) that this Python cannot import."""
    missing = []
    for name in GRADE_DEPENDENCIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def chapter_of(path: Path, nb: dict[str, Any] | None) -> str | None:
    """The chapter a notebook belongs to: its metadata first, then its file name."""
    if nb is not None:
        meta = nb.get("metadata", {}).get("llmbook", {})
        if isinstance(meta, dict) and meta.get("chapter") not in (None, ""):
            return normalise_chapter(meta["chapter"])
    match = re.match(r"(\d+)_", path.name)
    return normalise_chapter(match.group(1)) if match else None


def _make_client(nb: Any, workdir: Path, cell_timeout: float) -> Any:
    """An nbclient NotebookClient that keeps only a bounded amount of each cell's output."""
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        _kept: dict[int, int]

        def output(self, outs, msg, display_id, cell_index):
            is_error = msg.get("msg_type") == "error"
            size = len(json.dumps(msg.get("content", {}), default=str))
            kept = self._kept.get(cell_index, 0)
            if not is_error and (
                len(outs) >= MAX_OUTPUTS_PER_CELL or kept + size > MAX_OUTPUT_CHARS_PER_CELL
            ):
                return None
            self._kept[cell_index] = kept + size
            return super().output(outs, msg, display_id, cell_index)

    client = BoundedClient(
        nb,
        timeout=max(1, math.ceil(cell_timeout)),
        allow_errors=True,
        interrupt_on_timeout=True,
        # Without this, a cell whose code ignores the interrupt would be waited on forever.
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"the cell ran longer than {cell_timeout:g} s and was interrupted",
            "traceback": [],
        },
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        startup_timeout=120,
        # The results are already on disk; a kernel stuck in a loop need not be asked twice.
        shutdown_kernel="immediate",
        # After an interrupted cell nbclient waits this long for the kernel to go idle;
        # scores never depend on late output, so do not wait the default 4 s.
        iopub_timeout=1,
    )
    client._kept = {}
    return client


@dataclass
class _Run:
    """What happened while a notebook ran, for the report and for missing-check feedback."""

    problems: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before the last cell, if it did
    timed_out: dict[int, float] = field(default_factory=dict)  # cell index -> its limit


def _limit_memory(client: Any, gib: float | None, problems: list[str]) -> None:
    """Cap the kernel's address space (Linux): a notebook that allocates without end gets
    a MemoryError instead of taking the machine, and the grader with it."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    pid = getattr(getattr(getattr(client, "km", None), "provisioner", None), "pid", None)
    if gib is None or not isinstance(pid, int) or not hasattr(resource, "prlimit"):
        return
    limit = int(gib * 2**30)
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError) as err:
        problems.append(f"could not limit the kernel's memory ({err})")


def _execute(
    nb: Any, workdir: Path, env: dict[str, str], cell_timeout: float, total_timeout: float,
    memory_limit: float | None = None,
) -> _Run:
    """Run the notebook's code cells in order, each under a limit, all under another."""
    from nbclient.exceptions import DeadKernelError

    run = _Run()
    problems = run.problems
    stopped: str | None = None
    started = time.monotonic()
    client = _make_client(nb, workdir, cell_timeout)
    try:
        with client.setup_kernel(env=env):
            _limit_memory(client, memory_limit, problems)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                remaining = total_timeout - (time.monotonic() - started)
                if remaining <= 0:
                    stopped = f"grading stopped after the total time limit of {total_timeout:g} s"
                    problems.append(f"{stopped}, before cell {index}")
                    break
                # nbclient counts whole seconds.
                limit = max(1, math.ceil(min(cell_timeout, remaining)))
                client.timeout = limit
                client.error_on_timeout = {
                    **client.error_on_timeout,
                    "evalue": f"the cell ran longer than {limit:g} s and was interrupted",
                }
                cell_started = time.monotonic()
                try:
                    client.execute_cell(cell, index)
                except DeadKernelError:
                    stopped = f"the kernel died while running cell {index}"
                    problems.append(stopped)
                    break
                if time.monotonic() - cell_started >= limit:
                    run.timed_out[index] = limit
                    problems.append(f"cell {index} ran longer than {limit:g} s and was interrupted")
    except Exception as err:  # a kernel that will not start, a broken client
        stopped = f"the notebook could not be run to the end ({type(err).__name__}: {err})"
        problems.append(stopped)
    run.stopped = stopped
    return run


def _check_cell(nb: Any, name: str) -> int | None:
    """The index of the cell that calls ``check("name", ...)``, if there is one."""
    if nb is None:
        return None
    pattern = re.compile(r"""check\(\s*["']""" + re.escape(name) + r"""["']""")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and pattern.search(cell.source):
            return index
    return None


def _missing_feedback(name: str, nb: Any, run: _Run) -> str:
    """Why a check has no result, as precisely as the run lets us say."""
    index = _check_cell(nb, name)
    if index is None:
        return f"No result: the notebook never ran check({name!r}, ...)" + (
            f"; {run.stopped}." if run.stopped else ". Is its check cell missing?"
        )
    if index in run.timed_out:
        return (
            f"No result: the check cell (cell {index}) ran longer than {run.timed_out[index]:g} s "
            f"and was interrupted; code in it, or an earlier cell that never finished, kept "
            f"the kernel busy."
        )
    for out in nb.cells[index].get("outputs", []):
        if out.get("output_type") == "error":
            return (
                f"No result: the check cell (cell {index}) raised {out.get('ename')}: "
                f"{out.get('evalue')} before the check finished."
            )
    reason = run.stopped or "the cell did not reach the check"
    return f"No result: the check cell (cell {index}) never reported; {reason}."


def _run_and_judge(
    notebook: Path, nb: Any, expected: list[Check], run: _Run, cell_timeout: float,
    total_timeout: float, check_timeout: float | None, memory_limit: float | None,
) -> dict[str, dict[str, Any]]:
    """Run the notebook in a kernel whose working folder holds only a copy of it, judging
    in this process each check it serves; the verdicts by check name."""
    with tempfile.TemporaryDirectory(prefix="llmbook-grade-") as private, \
            tempfile.TemporaryDirectory(prefix="llmbook-run-") as workdir:
        shutil.copyfile(notebook, Path(workdir) / notebook.name)
        env = {k: v for k, v in os.environ.items() if k not in (SOCKET_ENV, TIMEOUT_ENV)}
        if check_timeout is not None:
            env[TIMEOUT_ENV] = str(check_timeout)
        env[SOCKET_ENV] = str(Path(private) / "answers.sock")

        def limit(check_: Check) -> float:
            return check_timeout if check_timeout is not None else check_.time_limit

        with AnswerServer(env[SOCKET_ENV], {c.name: c for c in expected}, limit) as server:
            executed = _execute(nb, Path(workdir), env, cell_timeout, total_timeout, memory_limit)
        run.problems.extend(executed.problems)
        run.stopped, run.timed_out = executed.stopped, executed.timed_out
        return {name: result.to_dict() for name, result in server.results.items()}


def grade(
    notebook: Path,
    *,
    cell_timeout: float = 60.0,
    total_timeout: float = 600.0,
    check_timeout: float | None = None,
    memory_limit: float | None = MEMORY_LIMIT,
) -> dict[str, Any]:
    """Execute ``notebook`` headless and return the score report as a dict. Never raises
    for anything the notebook does."""
    import nbformat

    started = time.monotonic()
    notebook = Path(notebook)
    run = _Run()
    nb = None
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as err:  # not JSON, not a notebook, unreadable
        run.stopped = f"the notebook could not be read ({type(err).__name__}: {err})"
        run.problems.append(run.stopped)
    chapter = chapter_of(notebook, nb)
    expected = checks_for_chapter(chapter) if chapter else []
    if chapter is None:
        run.problems.append(
            "no chapter found: add metadata {'llmbook': {'chapter': 'NN'}} or name the file NN_..."
        )

    reported: dict[str, dict[str, Any]] = {}
    if nb is not None:
        reported = _run_and_judge(notebook, nb, expected, run, cell_timeout, total_timeout,
                                  check_timeout, memory_limit)

    checks = []
    for expected_check in expected:
        entry = reported.get(expected_check.name)
        passed = bool(entry and entry.get("passed") is True)
        if entry is None:
            feedback = _missing_feedback(expected_check.name, nb, run)
            seconds = 0.0
        else:
            feedback = str(entry.get("feedback", ""))
            seconds = float(entry.get("seconds", 0.0) or 0.0)
        checks.append({
            "name": expected_check.name,
            "passed": passed,
            "points": expected_check.points if passed else 0,
            "max_points": expected_check.points,
            "feedback": feedback,
            "seconds": seconds,
        })
    return {
        "notebook": str(notebook),
        "chapter": chapter,
        "score": sum(c["points"] for c in checks),
        "max_score": sum(c["max_points"] for c in checks),
        "checks": checks,
        "problems": run.problems,
        "seconds": round(time.monotonic() - started, 2),
    }


def _failure_report(notebook: Path, problem: str) -> dict[str, Any]:
    """A zero-score report that still lists the checks the notebook should have passed."""
    try:
        chapter = chapter_of(notebook, None)
        expected = checks_for_chapter(chapter) if chapter else []
    except Exception:  # already reporting a failure; list no checks then
        chapter, expected = None, []
    checks = [
        {"name": c.name, "passed": False, "points": 0, "max_points": c.points,
         "feedback": f"No result: {problem}", "seconds": 0.0}
        for c in expected
    ]
    return {
        "notebook": str(notebook), "chapter": chapter, "score": 0,
        "max_score": sum(c["max_points"] for c in checks), "checks": checks,
        "problems": [problem], "seconds": 0.0,
    }


def summary(report: dict[str, Any]) -> str:
    """A short table for people: one line per check, then the score."""
    rows = [f"Grading {report['notebook']} (chapter {report['chapter'] or '?'})"]
    width = max([len(c["name"]) for c in report["checks"]] + [5])
    for c in report["checks"]:
        mark = "✅" if c["passed"] else "❌"
        first = c["feedback"].splitlines()[0] if c["feedback"] else ""
        if len(first) > 70:
            first = first[:67] + "..."
        rows.append(f"  {mark} {c['name']:<{width}}  {c['points']}/{c['max_points']}  {first}")
    rows.extend(f"  ! {problem}" for problem in report["problems"])
    rows.append(f"Score: {report['score']}/{report['max_score']} ({report['seconds']:.1f} s)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``llmbook-grade``)."""
    parser = argparse.ArgumentParser(
        prog="llmbook-grade", description="Execute an exercise notebook and score its checks."
    )
    parser.add_argument("notebook", type=Path, help="the submitted .ipynb")
    parser.add_argument("--out", type=Path, help="report path (default: NOTEBOOK.report.json)")
    parser.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell")
    parser.add_argument("--total-timeout", type=float, default=600.0, help="seconds in all")
    parser.add_argument(
        "--check-timeout", type=float, default=None,
        help="seconds per check, replacing each check's own limit",
    )
    parser.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT,
                        help="GiB of memory the notebook's kernel may use (Linux)")
    args = parser.parse_args(argv)
    missing = missing_dependencies()
    if missing:
        parser.exit(2, (
            f"llmbook-grade: error: the grader needs {', '.join(missing)}, which this Python "
            f"({sys.executable}) cannot import. Install the grader's dependencies (the grade "
            f"extra):\n    {INSTALL_GRADE}\n"
            f"(in a clone of the course, the README's set-up installs them too).\n"
        ))
    if not args.notebook.is_file():
        parser.error(f"no such notebook: {args.notebook}")
    for option in ("cell_timeout", "total_timeout", "check_timeout", "memory_limit"):
        value = getattr(args, option)
        if value is not None and value <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive")
    out = args.out or args.notebook.with_suffix(".report.json")

    try:
        report = grade(
            args.notebook,
            cell_timeout=args.cell_timeout,
            total_timeout=args.total_timeout,
            check_timeout=args.check_timeout,
            memory_limit=args.memory_limit,
        )
    except Exception as err:  # last line of defence: a report, not a traceback
        report = _failure_report(args.notebook, f"the grader failed: {type(err).__name__}: {err}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(summary(report))
    print(f"Report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
