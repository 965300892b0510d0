"""Graded exercises: ``check(name, answer)`` and the grader behind it (every chapter).

Each chapter's exercise notebook ends an exercise with a check cell such as
``check("intro.perplexity", perplexity)``. The checks live here, inside the installed
library, so they work in Colab with nothing else installed: ``core`` (the registry,
``check`` and its time limits), ``compare`` (the comparisons every check shares) and
``checks/chNN_slug.py`` (one module per chapter). The grader (``llmbook-grade``,
``python -m llmbook.exercises.grader``, which needs the ``grade`` extra) scores a whole
notebook with the very same checks, run in its own process: ``remote`` calls the
learner's functions in the notebook's kernel and ``wire`` carries only plain data back, so
nothing the notebook does can forge a verdict. The learners' ``exercises/`` notebooks are
written from the reference ``solutions/`` by the repository's ``tools/make_exercises.py``.

Importing this package has no side effects; a chapter's check module is imported the
first time one of its checks is looked up, and no other chapter's.
"""

from llmbook.exercises.checking import check
from llmbook.exercises.core import (
    Check,
    CheckFailed,
    CheckResult,
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
