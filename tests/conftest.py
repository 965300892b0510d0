"""Set-up shared by every test."""

from __future__ import annotations

import pytest

from llmbook.exercises.core import SOCKET_ENV, TIMEOUT_ENV


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test hands its answers to a real grader's socket or inherits a check's time limit
    from the environment it runs in (a test that wants either sets it itself)."""
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
