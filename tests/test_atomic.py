"""llmbook.atomic: a failed write leaves the old file and no temporary; the lock takes turns."""

from __future__ import annotations

import os
import threading
import time

import pytest

from llmbook.atomic import atomic_write_bytes, file_lock

_REAL_FDOPEN = os.fdopen


def test_write_creates_folders_and_replaces_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"
    assert atomic_write_bytes(target, b"one") == target and target.read_bytes() == b"one"
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["f.bin"]


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, where, error):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")

    def fail(*args, **kwargs):
        raise error

    if where == "write":  # the disk fills up halfway through the payload
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FailingFile(fd, error))
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(type(error)):
        atomic_write_bytes(target, b"new contents that never land")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["f.bin"]


class _FailingFile:
    """A file that writes half of what it is given, then fails (a full disk)."""

    def __init__(self, fd: int, error: BaseException) -> None:
        self.f, self.error = _REAL_FDOPEN(fd, "wb"), error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, payload: bytes) -> None:
        self.f.write(payload[: len(payload) // 2])
        self.f.flush()
        raise self.error


def test_the_lock_makes_a_second_caller_wait(tmp_path):
    target = tmp_path / "model.safetensors"
    events: list[str] = []
    inside = threading.Event()

    def first():
        with file_lock(target):
            events.append("first in")
            inside.set()
            time.sleep(0.3)
            events.append("first out")

    def second():
        inside.wait()
        with file_lock(target):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert events == ["first in", "first out", "second in"]
