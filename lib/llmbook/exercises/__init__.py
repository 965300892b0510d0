"""Graded exercises: ``check(name, answer)`` and the grader behind it (every chapter).

Each chapter's exercise notebook ends an exercise with a check cell such as
``check("intro.perplexity", perplexity)``. The checks live here, inside the installed
library, so they work in Colab with nothing else installed, and the grader
(``llmbook-grade``, ``python -m llmbook.exercises.grader``) scores a whole notebook
with the very same checks. The learners' ``exercises/`` notebooks are written from the
reference ``solutions/`` by the repository's ``tools/make_exercises.py``.

Importing this package has no side effects; chapter check modules are imported the
first time a check is looked up.
"""

from llmbook.exercises.core import (
    Check,
    CheckFailed,
    CheckResult,
    check,
    checks_for_chapter,
    register,
    registry,
)

__all__ = [
    "Check",
    "CheckFailed",
    "CheckResult",
    "check",
    "checks_for_chapter",
    "register",
    "registry",
]
