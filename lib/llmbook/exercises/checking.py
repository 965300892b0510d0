"""``check(name, answer)``: what an exercise notebook calls (every chapter).

In Jupyter or Colab the check runs right here, in the learner's kernel, and prints its
feedback. While the grader scores a notebook (``LLMBOOK_GRADE_SOCKET`` is set), the same
call only serves the answer to the grader, which judges it in its own process
(``llmbook.exercises.remote``). This function sits in its own module, above ``core`` and
``remote``, so that neither of them imports the other's caller.
"""

from __future__ import annotations

import os
import time
from typing import Any

from llmbook.exercises.core import SOCKET_ENV, CheckResult, _effective_limit, _format, _lookup, _run
from llmbook.exercises.remote import serve


def check(name: str, answer: Any, *, timeout: float | None = None) -> CheckResult:
    """Check a learner's answer to the exercise ``name`` and print friendly feedback.

    ``answer`` is whatever the exercise asks for (usually the function just written).
    ``timeout`` overrides the check's time limit in seconds. The result is printed and
    returned; while grading, the grader judges the answer in its own process
    (``llmbook.exercises.remote``) and the result is its verdict. Only an unknown ``name``
    raises (a ``KeyError`` listing the known checks), because that is the notebook
    author's mistake rather than the learner's.
    """
    check_ = _lookup(name)
    limit = _effective_limit(check_, timeout)
    socket_path = os.environ.get(SOCKET_ENV)
    if socket_path:  # being graded: the grader judges, in its own process
        result = serve(check_, answer, limit, socket_path)
        print(_format(result), flush=True)
        return result
    started = time.perf_counter()
    passed, feedback = _run(check_, answer, limit)
    seconds = time.perf_counter() - started
    result = CheckResult(
        name=name,
        passed=passed,
        points=check_.points if passed else 0,
        max_points=check_.points,
        feedback=feedback,
        seconds=round(seconds, 4),
    )
    print(_format(result), flush=True)
    return result


__all__ = ["check"]
