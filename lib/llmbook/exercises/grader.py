"""Grade a submitted exercise notebook headless and write a JSON score report.

    llmbook-grade 01_what_is_an_llm.ipynb --out report.json
    python -m llmbook.exercises.grader NOTEBOOK.ipynb [--cell-timeout 60] [--total-timeout 600]

The notebook runs top to bottom in a fresh kernel (nbclient, errors allowed, every cell
under a time limit and the whole run under another). The kernel gets
``LLMBOOK_GRADE_REPORT`` pointing at a temporary file; every ``check(...)`` appends its
result there and syncs it to disk at once. The score comes from that file alone, never
from what the notebook prints, so printed text cannot fake a pass, and a kernel that
dies halfway keeps the points it had already earned.

The checks expected are all registered checks of the notebook's chapter (from its
metadata ``{"llmbook": {"chapter": "01"}}``, else its file name ``01_...``). A check
that never reported scores zero with a reason. Whatever the notebook does (raise, hang,
print garbage, kill its kernel, not even be JSON), the grader writes a report and exits
0; only a usage error (such as a missing file) exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from llmbook.exercises.core import (
    REPORT_ENV,
    TIMEOUT_ENV,
    checks_for_chapter,
    normalise_chapter,
)

# The grader keeps only this much of a cell's output: enough to explain an error, and
# a notebook that prints without end cannot exhaust the grader's memory.
MAX_OUTPUTS_PER_CELL = 200
MAX_OUTPUT_CHARS_PER_CELL = 200_000


def chapter_of(path: Path, nb: dict[str, Any] | None) -> str | None:
    """The chapter a notebook belongs to: its metadata first, then its file name."""
    if nb is not None:
        meta = nb.get("metadata", {}).get("llmbook", {})
        if isinstance(meta, dict) and meta.get("chapter") not in (None, ""):
            return normalise_chapter(meta["chapter"])
    match = re.match(r"(\d+)_", path.name)
    return normalise_chapter(match.group(1)) if match else None


def read_report_lines(path: Path) -> dict[str, dict[str, Any]]:
    """Check results from the side-channel file; the last report of a name wins.

    A line cut short by a crash, or anything else that is not a result, is skipped.
    """
    results: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return results
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            results[entry["name"]] = entry
    return results


def _make_client(nb: Any, workdir: Path, cell_timeout: float) -> Any:
    """An nbclient NotebookClient that keeps only a bounded amount of each cell's output."""
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        _kept: dict[int, int]

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
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
        timeout=cell_timeout,
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
    )
    client._kept = {}
    return client


def _execute(
    nb: Any, workdir: Path, env: dict[str, str], cell_timeout: float, total_timeout: float
) -> tuple[list[str], str | None]:
    """Run the notebook's code cells in order; return (problems, why it stopped early)."""
    from nbclient.exceptions import DeadKernelError

    problems: list[str] = []
    stopped: str | None = None
    started = time.monotonic()
    client = _make_client(nb, workdir, cell_timeout)
    try:
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                remaining = total_timeout - (time.monotonic() - started)
                if remaining <= 0:
                    stopped = f"grading stopped after the total time limit of {total_timeout:g} s"
                    problems.append(f"{stopped}, before cell {index}")
                    break
                limit = max(min(cell_timeout, remaining), 0.5)
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
                if time.monotonic() - cell_started >= limit - 0.05:
                    problems.append(f"cell {index} ran longer than {limit:g} s and was interrupted")
    except Exception as err:  # noqa: BLE001 - a kernel that will not start, a broken client
        stopped = f"the notebook could not be run to the end ({type(err).__name__}: {err})"
        problems.append(stopped)
    return problems, stopped


def _cell_error(nb: Any, name: str) -> str | None:
    """The error shown by the check cell that mentions ``name``, if that cell failed."""
    if nb is None:
        return None
    pattern = re.compile(r"""check\(\s*["']""" + re.escape(name) + r"""["']""")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and pattern.search(cell.source):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return f"cell {index} raised {out.get('ename')}: {out.get('evalue')}"
            return f"found in cell {index}"
    return None


def _missing_feedback(name: str, nb: Any, stopped: str | None) -> str:
    where = _cell_error(nb, name)
    if where is None:
        return (
            f"No result: the notebook never ran check({name!r}, ...)"
            + (f"; {stopped}." if stopped else ". Is its check cell missing?")
        )
    if where.startswith("found"):
        reason = stopped or "its cell did not reach the check (an error earlier in the cell?)"
        return f"No result: the check cell ({where}) never reported; {reason}."
    return f"No result: the check cell failed before the check finished ({where})."


def grade(
    notebook: Path,
    *,
    cell_timeout: float = 60.0,
    total_timeout: float = 600.0,
    check_timeout: float | None = None,
) -> dict[str, Any]:
    """Execute ``notebook`` headless and return the score report as a dict. Never raises
    for anything the notebook does."""
    import nbformat

    started = time.monotonic()
    notebook = Path(notebook)
    problems: list[str] = []
    stopped: str | None = None
    nb = None
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as err:  # noqa: BLE001 - not JSON, not a notebook, unreadable
        stopped = f"the notebook could not be read ({type(err).__name__}: {err})"
        problems.append(stopped)
    chapter = chapter_of(notebook, nb)
    expected = checks_for_chapter(chapter) if chapter else []
    if chapter is None:
        problems.append(
            "no chapter found: add metadata {'llmbook': {'chapter': 'NN'}} or name the file NN_..."
        )

    reported: dict[str, dict[str, Any]] = {}
    if nb is not None:
        with tempfile.TemporaryDirectory(prefix="llmbook-grade-") as tmp:
            report_file = Path(tmp) / "checks.jsonl"
            report_file.touch()
            env = dict(os.environ)
            env[REPORT_ENV] = str(report_file)
            if check_timeout is not None:
                env[TIMEOUT_ENV] = str(check_timeout)
            else:
                env.pop(TIMEOUT_ENV, None)
            workdir = notebook.resolve().parent
            more, stopped = _execute(nb, workdir, env, cell_timeout, total_timeout)
            problems.extend(more)
            reported = read_report_lines(report_file)

    checks = []
    for expected_check in expected:
        entry = reported.get(expected_check.name)
        passed = bool(entry and entry.get("passed") is True)
        if entry is None:
            feedback = _missing_feedback(expected_check.name, nb, stopped)
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
        "problems": problems,
        "seconds": round(time.monotonic() - started, 2),
    }


def _failure_report(notebook: Path, problem: str) -> dict[str, Any]:
    """A zero-score report that still lists the checks the notebook should have passed."""
    try:
        chapter = chapter_of(notebook, None)
        expected = checks_for_chapter(chapter) if chapter else []
    except Exception:  # noqa: BLE001 - already reporting a failure; list no checks then
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
    for problem in report["problems"]:
        rows.append(f"  ! {problem}")
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
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"no such notebook: {args.notebook}")
    for option in ("cell_timeout", "total_timeout", "check_timeout"):
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
        )
    except Exception as err:  # noqa: BLE001 - last line of defence: a report, not a traceback
        report = _failure_report(args.notebook, f"the grader failed: {type(err).__name__}: {err}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(summary(report))
    print(f"Report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
