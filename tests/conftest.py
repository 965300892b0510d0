"""Set-up shared by every test."""

from __future__ import annotations

import pytest

from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes into a real grading report or inherits a check's time limit from the
    environment it runs in (a test that wants either sets it itself)."""
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
