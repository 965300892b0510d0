"""tools/gpu_check.py on a folder of tiny notebooks: every one is attempted, failures and
time-outs are reported with their cell, and the JSON and Markdown reports agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"


def notebook(folder: Path, name: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(folder / name))


@pytest.fixture(scope="module")
def chapters(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chapters")
    notebook(folder, "01_profile.ipynb", "import os", "assert os.environ['LLMBOOK_PROFILE'] == 'gpu'")
    notebook(folder, "02_fails.ipynb", "x = 1", "# a comment first\nraise ValueError('the loss went up')",
             "never = True")
    notebook(folder, "03_hangs.ipynb", "import time\ntime.sleep(600)")
    notebook(folder, "04_after.ipynb", "print('still run after two failures')")
    return folder


@pytest.fixture(scope="module")
def report(chapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    run = subprocess.run([sys.executable, str(TOOL), "--folder", str(chapters), "--out", str(out),
                          "--timeout", "20"], capture_output=True, text=True, timeout=300)
    return run, json.loads((out / "gpu-check.json").read_text()), (out / "gpu-check.md").read_text()


def test_every_notebook_is_attempted_and_failures_set_the_exit_status(report):
    run, data, _ = report
    assert run.returncode == 1, run.stdout + run.stderr
    assert [Path(r["path"]).name for r in data["notebooks"]] == [
        "01_profile.ipynb", "02_fails.ipynb", "03_hangs.ipynb", "04_after.ipynb"]
    assert [r["ok"] for r in data["notebooks"]] == [True, False, False, True]
    assert data["passed"] == 2 and data["profile"] == "gpu"


def test_a_failing_cell_is_named_with_its_error(report):
    _, data, md = report
    error = data["notebooks"][1]["error"]
    assert error["cell"] == 1 and error["ename"] == "ValueError" and error["evalue"] == "the loss went up"
    assert error["first_line"] == "raise ValueError('the loss went up')"
    assert "02_fails.ipynb, cell 1: ValueError" in md and "the loss went up" in md
    assert "\x1b[" not in md and "ValueError" in error["traceback"]  # plain text, no colour codes


def test_a_notebook_over_its_budget_is_stopped_and_reported(report):
    _, data, _ = report
    hung = data["notebooks"][2]
    assert hung["error"]["ename"] == "Timeout" and hung["error"]["cell"] == 0
    assert hung["wall_seconds"] < 120  # not the 600 s the cell asked for


def test_times_and_gpu_fields_are_recorded(report):
    _, data, md = report
    for r in data["notebooks"]:
        assert r["wall_seconds"] > 0 and r["cpu_seconds"] >= 0
        # these notebooks never import torch: no CUDA numbers, whatever the machine
        assert r["cuda"] is False and r["peak_allocated_bytes"] is None
    assert md.startswith("# gpu-check: 2/4 chapters passed")
    assert "| 04_after.ipynb | pass |" in md


def test_chapters_selects_by_number_and_rejects_unknown_ones(chapters):
    sys.path.insert(0, str(TOOL.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(TOOL.parent))
    assert [p.name for p in gpu_check.select(chapters, ["04", "02"])] == ["02_fails.ipynb", "04_after.ipynb"]
    assert len(gpu_check.select(chapters, None)) == 4
    with pytest.raises(SystemExit, match="09"):
        gpu_check.select(chapters, ["09"])
