"""Execute the book's notebooks, several at a time, into the book build's execution cache.

The book build (jupyter-book with ``execute_notebooks: cache``) executes every notebook it
cannot find in its cache, one after another. This script does that same execution first,
``--jobs`` notebooks at a time with one thread each, so a machine with several cores builds
the book in a fraction of the time:

* the notebooks are the ones the build executes: every notebook in ``_toc.yml`` that is not
  excluded by ``execute.exclude_patterns`` in ``_config.yml`` (the exercises, which raise
  until a reader solves them);
* each is executed as the build itself does (``jupyter_cache``'s ``single_nb_execution``:
  nbclient, in the notebook's own folder, with the timeout and error policy of
  ``_config.yml``), except that the client waits for the kernel in one-second slices, which
  avoids nbclient's stall on cells with widgets (``sliced`` says more);
* each executed notebook is stored in the build's cache (``execute.cache``), keyed by the
  hash of its code, so ``jupyter-book build`` then finds it and only renders it.

Every notebook is attempted. A notebook with a failing cell is reported with its
traceback, is not cached, and makes the script exit with status 1, so the book command
stops before rendering a book with a broken chapter in it. ``_build/execution.json``
records each notebook's outcome, wall time and its kernel's CPU time (on a shared machine
the CPU time is the one to judge a chapter's budget by); tests/test_site.py reads it.

Usage: python tools/execute_notebooks.py [--jobs N]   (from the repository root)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import queue
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "_build" / "execution.json"


def toc_entries(node) -> list[str]:
    """Every ``file``/``root`` entry of a jupyter-book table of contents, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(str(node[key]))
        for key, value in node.items():
            if key not in ("root", "file"):
                found.extend(toc_entries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(toc_entries(item))
    return found


def notebooks_to_execute(root: Path = ROOT) -> list[Path]:
    """The notebooks the book build executes, in table-of-contents order."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    excluded = config.get("execute", {}).get("exclude_patterns", [])
    paths = []
    for entry in toc_entries(toc):
        path = root / (entry if entry.endswith(".ipynb") else entry + ".ipynb")
        if not path.is_file():
            continue  # a Markdown page: nothing to execute
        if any(PurePosixPath(path.as_posix()).match(p) for p in excluded):
            continue
        paths.append(path)
    return paths


def _cpu(usage) -> float:
    """User + system seconds of a getrusage() result (or of RUSAGE_CHILDREN now)."""
    if isinstance(usage, int):
        usage = resource.getrusage(usage)
    return usage.ru_utime + usage.ru_stime


SLICE_SECONDS = 1.0  # how long one wait on a kernel channel lasts before it looks again


def sliced(get_msg: Callable[..., Awaitable[dict]], slice_seconds: float = SLICE_SECONDS):
    """Wrap a channel's ``get_msg`` so that one long wait becomes many short ones.

    nbclient waits for a cell's reply with one ``get_msg(timeout=<cell timeout>)``. When a
    cell shows an ipywidget, that wait sometimes misses the reply that has already arrived
    and returns only at the timeout (jupyter/nbclient#312): the notebook is correct but
    takes 15 minutes longer. Polling again every ``slice_seconds`` finds the waiting
    message; the overall timeout (``None``: wait for ever) is kept.
    """

    async def get(timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_seconds if deadline is None else deadline - time.monotonic()
            try:
                return await get_msg(timeout=max(0.0, min(slice_seconds, left)))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get


def _client_class():
    """nbclient's NotebookClient whose shell and iopub waits are ``sliced``."""
    from nbclient import NotebookClient

    class SlicedWaitClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            for channel in (kc.shell_channel, kc.iopub_channel):
                channel.get_msg = sliced(channel.get_msg)
            return kc

    return SlicedWaitClient


def execute_notebook(nb, cwd: str, timeout: int | None, allow_errors: bool):
    """Execute ``nb`` in place as jupyter-cache's ``single_nb_execution`` does.

    Same options (a notebook's own ``metadata.execution`` overrides the timeout and error
    policy), same errors caught; only the client waits in slices (see ``sliced``).
    Returns (seconds, error or None, traceback text or None).
    """
    import traceback

    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    own = nb.metadata.get("execution", {})
    timeout = own.get("timeout", timeout)
    allow_errors = own.get("allow_errors", allow_errors)
    client = _client_class()(
        nb,
        resources={"metadata": {"path": cwd}},
        timeout=timeout,
        allow_errors=allow_errors,
        record_timing=False,
    )
    started = time.perf_counter()
    error = text = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        error, text = err, traceback.format_exc()
    return time.perf_counter() - started, error, text


def _execute(path: str, timeout: int | None, allow_errors: bool, threads: str | None) -> dict:
    """Run in a worker process: execute one notebook and return it with its time and error."""
    import nbformat

    # The kernel inherits this process's environment. MPLBACKEND=Agg (set for the tests)
    # would stop ipykernel from choosing its inline backend, and the pages would lose
    # their figures, so it is removed here.
    os.environ.pop("MPLBACKEND", None)
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads
    nb = nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)
    # The kernel is this process's child: its CPU time is counted once it has exited.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, error, text = execute_notebook(nb, str(Path(path).parent), timeout, allow_errors)
    return {
        "notebook": nbformat.writes(nb) if error is None else None,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(_cpu(resource.RUSAGE_CHILDREN) - _cpu(before), 1),
        "error": text,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        default="auto",
        help="notebooks executed at once (default: auto = the number of CPU cores, at most 4)",
    )
    args = parser.parse_args(argv)
    jobs = min(os.cpu_count() or 1, 4) if args.jobs == "auto" else max(1, int(args.jobs))

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    execute = config.get("execute", {})
    if execute.get("execute_notebooks", "auto") != "cache":
        print(
            "execute_notebooks is not 'cache' in _config.yml: the build executes the notebooks itself"
        )
        return 0
    if execute.get("run_in_temp"):
        print(
            "run_in_temp is set in _config.yml: this script executes in the notebooks' folders; stopping"
        )
        return 2
    cache = get_cache(str(ROOT / execute.get("cache", ".jupyter_cache")))
    timeout = execute.get("timeout", 30)
    allow_errors = bool(execute.get("allow_errors", False))
    # One thread per kernel when several run at once: more threads than cores is slower.
    threads = os.environ.get("OMP_NUM_THREADS") or ("1" if jobs > 1 else None)

    todo, records = [], []
    for path in notebooks_to_execute():
        nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        try:
            cache.match_cache_notebook(nb)
        except KeyError:
            todo.append(path)
        else:
            print(f"cached already: {path.relative_to(ROOT)}")
            records.append(
                {
                    "path": str(path.relative_to(ROOT)),
                    "ok": True,
                    "seconds": None,
                    "cpu_seconds": None,
                    "error": None,
                }
            )

    print(
        f"executing {len(todo)} notebooks, {jobs} at a time, OMP_NUM_THREADS={threads or 'unset'}",
        flush=True,
    )
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_execute, str(p), timeout, allow_errors, threads): p for p in todo}
        for future in cf.as_completed(futures):
            path = futures[future]
            name = str(path.relative_to(ROOT))
            try:
                out = future.result()
            except Exception as err:
                out = {
                    "notebook": None,
                    "seconds": None,
                    "cpu_seconds": None,
                    "error": repr(err),
                }
            ok = out["error"] is None
            if ok:
                cache.cache_notebook_bundle(
                    CacheBundleIn(
                        nbformat.reads(out["notebook"], as_version=4),
                        str(path),
                        data={"execution_seconds": out["seconds"]},
                    ),
                    check_validity=False,
                    overwrite=True,
                )
            records.append(
                {
                    "path": name,
                    "ok": ok,
                    "seconds": out["seconds"],
                    "cpu_seconds": out["cpu_seconds"],
                    "error": out["error"],
                }
            )
            print(
                f"{'ok    ' if ok else 'FAILED'} {out['seconds'] or 0:7.1f} s wall "
                f"{out['cpu_seconds'] or 0:7.1f} s CPU  {name}",
                flush=True,
            )
            if not ok:
                print(out["error"], file=sys.stderr, flush=True)

    wall = time.perf_counter() - started
    records.sort(key=lambda r: r["path"])
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        json.dumps({"jobs": jobs, "wall_seconds": round(wall, 1), "notebooks": records}, indent=1)
    )
    failed = [r["path"] for r in records if not r["ok"]]
    print(
        f"executed {len(records)} notebooks in {wall:.0f} s wall; {len(failed)} failed {failed or ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
