"""tools/execute_notebooks.py: the waits in slices, and execution as the book build does it."""

import asyncio
import importlib.util
import queue
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
EXECUTE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(EXECUTE)


class Channel:
    """A kernel channel whose message is ready only after `empty` polls have missed it."""

    def __init__(self, empty: int) -> None:
        self.empty, self.timeouts = empty, []

    async def get_msg(self, timeout=None):
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.empty:
            await asyncio.sleep(timeout or 0)
            raise queue.Empty
        return {"msg_id": "reply"}


def test_a_long_wait_becomes_short_polls_that_find_a_late_message():
    channel = Channel(empty=3)
    get = EXECUTE.sliced(channel.get_msg, slice_seconds=0.01)
    assert asyncio.run(get(timeout=900)) == {"msg_id": "reply"}
    assert len(channel.timeouts) == 4 and max(channel.timeouts) <= 0.01


def test_waiting_for_ever_polls_in_slices_too():
    channel = Channel(empty=2)
    get = EXECUTE.sliced(channel.get_msg, slice_seconds=0.01)
    assert asyncio.run(get(timeout=None)) == {"msg_id": "reply"}
    assert channel.timeouts == [0.01, 0.01, 0.01]


def test_the_overall_timeout_still_holds():
    channel = Channel(empty=10**6)
    get = EXECUTE.sliced(channel.get_msg, slice_seconds=0.01)
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        asyncio.run(get(timeout=0.05))
    assert 0.04 <= time.monotonic() - started < 1.0


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_executes_in_the_notebooks_folder_and_reports_a_failing_cell(tmp_path):
    (tmp_path / "data.txt").write_text("found")
    nb = _notebook("print(open('data.txt').read())", "import ipywidgets\nipywidgets.IntSlider(3)")
    seconds, error, text = EXECUTE.execute_notebook(nb, str(tmp_path), 60, False)
    assert error is None and text is None and seconds > 0
    assert nb.cells[0].outputs[0]["text"] == "found\n"
    assert "application/vnd.jupyter.widget-view+json" in nb.cells[1].outputs[0]["data"]

    broken = _notebook("x = 1", "raise ValueError('the cell says what went wrong')", "y = 2")
    _, error, text = EXECUTE.execute_notebook(broken, str(tmp_path), 60, False)
    assert error is not None and "the cell says what went wrong" in text
    assert broken.cells[2].outputs == [] and broken.cells[2].execution_count is None
