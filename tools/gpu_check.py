"""Execute every chapter on the ``gpu`` profile and report how each one did (make gpu-check).

The published book is built on CPUs, so the ``gpu`` profile (what a reader gets in Colab
with a GPU) is never executed by ``make test``. Run this on a machine with a GPU:

* every chapter notebook (``chapters/*.ipynb``, in order, or the ones ``--chapters``
  names) is executed in a fresh kernel with ``LLMBOOK_PROFILE=gpu``, in its own folder;
* each notebook has a wall-clock budget (``--timeout`` seconds for the whole notebook,
  not per cell); a cell still running when it is spent is interrupted and reported;
* a failing notebook does not stop the run: every chapter is attempted;
* after the chapter's cells, one more cell asks the same kernel for the GPU's name and
  its peak memory (``torch.cuda.max_memory_allocated``/``_reserved``), when CUDA is there;
* ``_build/gpu-check.json`` and ``_build/gpu-check.md`` record, per chapter, pass or fail,
  wall time, the kernel's CPU time (measured as tools/execute_notebooks.py measures it),
  the GPU and its peak memory, and for a failure the cell's index, its first line and
  the error.

Exit status: 0 when every chapter passed, 1 otherwise.

Usage: python tools/gpu_check.py [--chapters 05 07] [--timeout 1800]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_notebooks import ROOT, _cpu  # the book build's CPU-time measure

PROBE_MARK = "<<gpu-check>>"
# Asks the chapter's own kernel what it used; imports torch only if the chapter did.
PROBE = f"""\
import json as _json, sys as _sys
_probe = {{"cuda": False, "gpu": None, "peak_allocated_bytes": None, "peak_reserved_bytes": None}}
if "torch" in _sys.modules and _sys.modules["torch"].cuda.is_available():
    _torch = _sys.modules["torch"]
    _probe.update(cuda=True, gpu=_torch.cuda.get_device_name(0),
                  peak_allocated_bytes=_torch.cuda.max_memory_allocated(),
                  peak_reserved_bytes=_torch.cuda.max_memory_reserved())
print({PROBE_MARK!r} + _json.dumps(_probe))
"""
PROBE_TIMEOUT = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def host_gpus() -> list[str]:
    """The GPUs nvidia-smi lists (none without a driver), without starting CUDA here."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def select(folder: Path, chapters: list[str] | None) -> list[Path]:
    """The folder's notebooks in order; with ``chapters``, those whose names start with one."""
    notebooks = sorted(folder.glob("*.ipynb"))
    if not chapters:
        return notebooks
    unknown = [c for c in chapters if not any(p.name.startswith(c) for p in notebooks)]
    if unknown:
        raise SystemExit(f"no notebook in {folder} starts with {unknown}; "
                         f"choose from {[p.name for p in notebooks]}")
    return [p for p in notebooks if any(p.name.startswith(c) for c in chapters)]


def _probe_result(cell: Any) -> dict[str, Any] | None:
    for output in cell.get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(PROBE_MARK):
                return json.loads(line[len(PROBE_MARK):])
    return None


def _error_of(cell: Any, index: int, err: BaseException) -> dict[str, Any]:
    """What a reader of the report needs: which cell, what it starts with, what went wrong."""
    source = "".join(cell.get("source", ""))
    first_line = next((ln for ln in source.splitlines() if ln.strip() and not ln.startswith("#")), "")
    text = ANSI.sub("", str(err))  # IPython colours its tracebacks
    lines = text.strip().splitlines()
    return {
        "cell": index,
        "first_line": first_line[:120],
        # CellExecutionError carries the kernel's exception; anything else is nbclient's own
        "ename": getattr(err, "ename", None) or type(err).__name__,
        "evalue": ANSI.sub("", str(getattr(err, "evalue", None) or (lines[-1] if lines else "")))[:500],
        "traceback": text[-4000:],
    }


def run_notebook(path: Path, timeout: float, kernel_name: str | None = None) -> dict[str, Any]:
    """Execute one notebook in a fresh kernel within ``timeout`` seconds; never raises for
    what the notebook does (failing cells, a dead kernel, the time running out)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3")
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                              "ok": False, "error": None, "cuda": False, "gpu": None,
                              "peak_allocated_bytes": None, "peak_reserved_bytes": None}
    client = NotebookClient(
        nb,
        kernel_name=name,
        resources={"metadata": {"path": str(path.parent)}},
        # the notebook's remaining budget is the timeout of whichever cell is running
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        # when the budget runs out: interrupt the kernel and report the cell as failed at once
        interrupt_on_timeout=True,
        error_on_timeout={"ename": "Timeout", "evalue": f"the notebook's budget of {timeout:.0f} s ran out "
                          "in this cell (--timeout)", "traceback": []},
        allow_errors=False,
        record_timing=False,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    index = -1
    try:
        with client.setup_kernel():
            try:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
                record["ok"] = True
            except Exception as err:  # a failing cell, a timeout, a dead kernel
                record["error"] = _error_of(nb.cells[index], index, err)
            # Ask the same kernel what it used, failed or not (unless it died).
            probe = nbformat.v4.new_code_cell(PROBE)
            client.timeout_func = None
            client.timeout = PROBE_TIMEOUT
            try:
                client.execute_cell(probe, len(nb.cells))
                record.update(_probe_result(probe) or {})
            except Exception:  # a dead or stuck kernel: no numbers
                pass
    except Exception as err:  # the kernel did not start
        record["error"] = _error_of({}, index, err)
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    record["cpu_seconds"] = round(_cpu(resource.RUSAGE_CHILDREN) - _cpu(before), 1)
    return record


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# gpu-check: {report['passed']}/{len(report['notebooks'])} chapters passed",
        "",
        f"Profile `{report['profile']}`, GPU {', '.join(report['host_gpus']) or 'none found'}, "
        f"Python {report['python']}, per-notebook budget {report['timeout_seconds']} s, "
        f"total {report['wall_seconds']} s wall.",
        "",
        "| chapter | result | wall s | CPU s | GPU | peak allocated GiB | peak reserved GiB |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in report["notebooks"]:
        result = "pass" if r["ok"] else f"**FAIL** ({r['error']['ename']})"
        lines.append(f"| {Path(r['path']).name} | {result} | {r['wall_seconds']} | {r['cpu_seconds']} | "
                     f"{r['gpu'] or ''} | {_gib(r['peak_allocated_bytes'])} | {_gib(r['peak_reserved_bytes'])} |")
    failures = [r for r in report["notebooks"] if not r["ok"]]
    if failures:
        lines += ["", "## Failures"]
        for r in failures:
            e = r["error"]
            lines += ["", f"### {Path(r['path']).name}, cell {e['cell']}: {e['ename']}", "",
                      f"First line: `{e['first_line']}`", "", f"{e['evalue']}", "",
                      "```", e["traceback"].strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", metavar="NN",
                        help="run only the chapters whose file names start with these, e.g. 05 07")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds each notebook may take in all (default 1800)")
    parser.add_argument("--folder", type=Path, default=ROOT / "chapters", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "_build", help="where the reports go")
    parser.add_argument("--profile", default="gpu", help="LLMBOOK_PROFILE for the kernels (default gpu)")
    parser.add_argument("--kernel", default=None, help="kernel name (default: each notebook's own)")
    args = parser.parse_args(argv)

    notebooks = select(args.folder, args.chapters)
    # The kernels inherit this environment. MPLBACKEND=Agg (set for the tests) would stop
    # ipykernel from choosing its inline backend; figures are not this check's business,
    # but a chapter should run as it does for a reader.
    os.environ["LLMBOOK_PROFILE"] = args.profile
    os.environ.pop("MPLBACKEND", None)
    gpus = host_gpus()
    print(f"gpu-check: {len(notebooks)} notebooks, LLMBOOK_PROFILE={args.profile}, "
          f"GPU: {', '.join(gpus) or 'none found'}", flush=True)
    started = time.perf_counter()
    records = []
    for path in notebooks:
        record = run_notebook(path, args.timeout, args.kernel)
        records.append(record)
        status = "ok    " if record["ok"] else "FAILED"
        peak = f"  peak {_gib(record['peak_allocated_bytes'])} GiB" if record["cuda"] else ""
        print(f"{status} {record['wall_seconds']:7.1f} s wall {record['cpu_seconds']:7.1f} s CPU{peak}  "
              f"{path.name}", flush=True)
        if not record["ok"]:
            e = record["error"]
            print(f"       cell {e['cell']} ({e['first_line']}): {e['ename']}: {e['evalue']}", flush=True)
    report = {
        "profile": args.profile,
        "host_gpus": gpus,
        "python": platform.python_version(),
        "timeout_seconds": args.timeout,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "passed": sum(r["ok"] for r in records),
        "notebooks": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report))
    print(f"{report['passed']}/{len(records)} passed; report in {args.out / 'gpu-check.md'}")
    return 0 if report["passed"] == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
