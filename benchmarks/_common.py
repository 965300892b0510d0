"""Helpers shared by the benchmarks: thread setup, machine description, medians, tables.

Not a benchmark itself. Every benchmark prints ratios measured within one run, because
the machines this course runs on (2 shared CPU cores) are too noisy for absolute targets.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def setup(seed: int = 0) -> int:
    """Use every core, seed everything, and point ``LLMBOOK_DATA`` at the shared data folder.

    Returns the number of threads torch will use.
    """
    from llmbook.device import seed_everything

    if not os.environ.get("LLMBOOK_DATA") and DEFAULT_DATA.is_dir():
        os.environ["LLMBOOK_DATA"] = str(DEFAULT_DATA)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    seed_everything(seed)
    return cores


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (it also reads well in a terminal)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def yes_no(flag: bool) -> str:
    return "yes" if flag else "NO"

