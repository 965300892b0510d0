"""Writing files so that a crash never leaves half of one (used by chapter 8's checkpoints).

Downloads (``llmbook.data``), checkpoints (``llmbook.checkpoint``), exported weights
(``llmbook.weights``) and the cached base model (``llmbook.pretrained``) all write files
that a later run trusts. ``atomic_write_bytes`` writes to a temporary file in the same
folder, flushes it to disk and renames it over the target: a rename within one file
system is atomic, so a reader sees the old file or the new one, never a mixture, and an
interrupted write leaves the old file and no temporary behind. ``file_lock`` lets two
processes (parallel tests, two notebooks) take turns at making the same file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX only; elsewhere the lock is a no-op and two first calls may both do the work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and an atomic rename.

    On any failure (a full disk, an interrupt) the temporary file is removed and whatever
    was at ``path`` before is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (beside ``path``) for the ``with`` block.

    The second process to arrive waits until the first leaves the block, then finds
    the file the first one made.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
