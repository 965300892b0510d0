"""The machinery behind every graded exercise: a registry of checks and how one runs.

An exercise notebook hands the learner's answer to ``check("concept.name", answer)``
(``llmbook.exercises.checking``). The check runs the answer against a reference inside a time limit, turns anything that
goes wrong (a wrong value, an exception, a hang) into feedback the learner can act on,
and never raises itself, so that a notebook run top to bottom always reaches the next
exercise.

The same checks do the grading, in the grader's own process: while a notebook is graded
(``SOCKET_ENV`` is set), ``check`` only hands the answer to the grader
(``llmbook.exercises.remote``), which calls the learner's functions remotely and keeps its
own verdict; nothing the notebook prints or writes is read.

Each chapter's checks live in one module, ``llmbook.exercises.checks.chNN_slug``, and
register themselves with the ``@register`` decorator when it is imported. A check's name
starts with its chapter's concept (``"gpt.layer_norm"``), and ``CHECK_MODULES`` maps that
concept to the one module to import, so looking up a check imports its own chapter's
module and no other: a chapter whose module is broken cannot break the checks of the
others, and ``import llmbook.exercises`` itself stays light and free of side effects.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

SOCKET_ENV = "LLMBOOK_GRADE_SOCKET"
"""Environment variable naming the grader's Unix socket while it grades a notebook."""

TIMEOUT_ENV = "LLMBOOK_CHECK_TIMEOUT"
"""Environment variable (seconds) that replaces every check's default time limit.

The grader sets it (``--check-timeout``) so that tests and instructors can grade quickly
without editing the registry."""

DEFAULT_TIME_LIMIT = 20.0

CHECKS_PACKAGE = "llmbook.exercises.checks"

CHECK_MODULES: dict[str, str] = {
    "intro": "ch01_intro",
    "embeddings": "ch02_embeddings",
    "tokenization": "ch03_tokenization",
    "recurrent": "ch04_recurrent",
    "attention": "ch05_attention",
    "transformer": "ch06_transformer",
    "gpt": "ch07_gpt",
    "pretraining": "ch08_pretraining",
    "classification": "ch09_classification",
    "instruction": "ch10_instruction",
    "emergent": "ch11_emergent",
    "scaling": "ch12_scaling",
    "modern": "ch13_modern",
}
"""The concept that starts a check's name -> its chapter's module in ``CHECKS_PACKAGE``.
The module's name starts with ``chNN_``, NN being the chapter its checks belong to."""


class CheckFailed(Exception):
    """Raised inside a checker when the answer is wrong; the message is the feedback."""


class NotWritten(Exception):
    """The learner's code raised ``NotImplementedError``: the exercise is still a stub."""


class UnknownCheckError(KeyError):
    """``check`` was given a name that no module registered (a typo in the notebook)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class CheckTimeout(BaseException):
    """Raised by the SIGALRM handler when a check runs past its time limit.

    It derives from ``BaseException`` so that a learner's ``except Exception:`` cannot
    swallow it and keep the loop that is hanging alive.
    """


@dataclass(frozen=True)
class Check:
    """One registered exercise check."""

    name: str
    checker: Callable[[Any], str | None]
    chapter: str
    points: int = 1
    time_limit: float = DEFAULT_TIME_LIMIT
    title: str = ""
    kind: str | None = None


# What an exercise asks of the learner (tests/test_exercise_design.py counts them per chapter):
# "build" writes something the chapter explained but did not print (a variant, an extension,
# or a part the chapter took from llmbook); "experiment" trains, ablates or measures until
# a target the check verifies by running the learner's code; "formula" is a short formula.
# A check registered without a kind fails that test until it says which it is.
KINDS = ("build", "experiment", "formula")


@dataclass
class CheckResult:
    """What ``check`` returns: enough to show the learner and to grade."""

    name: str
    passed: bool
    points: int
    max_points: int
    feedback: str
    seconds: float

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        state = "passed" if self.passed else "not passed yet"
        return f"<CheckResult {self.name}: {state}, {self.points}/{self.max_points} points>"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REGISTRY: dict[str, Check] = {}


def register(
    name: str,
    *,
    chapter: str,
    points: int = 1,
    time_limit: float = DEFAULT_TIME_LIMIT,
    title: str = "",
    kind: str | None = None,
) -> Callable[[Callable[[Any], str | None]], Callable[[Any], str | None]]:
    """Decorator that adds a checker to the registry under ``name``.

    A checker takes the learner's answer, raises ``CheckFailed`` with actionable feedback
    when it is wrong, and otherwise returns a short message saying what was verified.
    """
    if "." not in name:
        raise ValueError(f"check names look like 'concept.exercise', got {name!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r} for check {name!r}")

    def decorate(checker: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if name in _REGISTRY and _REGISTRY[name].checker is not checker:
            raise ValueError(f"a check named {name!r} is already registered")
        _REGISTRY[name] = Check(name, checker, chapter, points, time_limit, title, kind)
        return checker

    return decorate


def chapter_of_module(module: str) -> str:
    """The chapter of a check module from its name: ``"ch07_gpt"`` -> ``"07"``."""
    return module[2:4]


def _import_concept(concept: str) -> None:
    """Import the one check module of ``concept`` (once; Python caches it), so it registers."""
    importlib.import_module(f"{CHECKS_PACKAGE}.{CHECK_MODULES[concept]}")


def registry() -> dict[str, Check]:
    """Every chapter's checks by name (importing each chapter's check module)."""
    for concept in CHECK_MODULES:
        _import_concept(concept)
    return dict(_REGISTRY)


def checks_for_chapter(chapter: str | int) -> list[Check]:
    """The checks of one chapter (``"01"``), in the order their module registers them
    (which is the order of the exercises): what a grader expects to see. Imports that
    chapter's check module only."""
    chapter = normalise_chapter(chapter)
    for concept, module in CHECK_MODULES.items():
        if chapter_of_module(module) == chapter:
            _import_concept(concept)
    return [c for c in _REGISTRY.values() if c.chapter == chapter]


def normalise_chapter(chapter: str | int) -> str:
    """``1``, ``"1"`` and ``"01"`` all mean chapter ``"01"``."""
    text = str(chapter).strip()
    return f"{int(text):02d}" if text.isdigit() else text


def _lookup(name: str) -> Check:
    """The check called ``name``, importing only its chapter's module."""
    concept = name.partition(".")[0]
    if concept not in CHECK_MODULES:
        known = ", ".join(
            f"{c} (chapter {chapter_of_module(m)})" for c, m in CHECK_MODULES.items()
        )
        raise UnknownCheckError(
            f"there is no check named {name!r}: check names start with a chapter's concept, "
            f"one of {known}. Is there a typo in the name?"
        )
    _import_concept(concept)
    if name in _REGISTRY:
        return _REGISTRY[name]
    same_concept = sorted(n for n in _REGISTRY if n.partition(".")[0] == concept)
    chapter = chapter_of_module(CHECK_MODULES[concept])
    raise UnknownCheckError(
        f"there is no check named {name!r}. Known checks of chapter {chapter}: "
        f"{', '.join(same_concept) or 'none'}. Is there a typo in the name?"
    )


# --------------------------------------------------------------------------- time limits


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``CheckTimeout`` in the code inside if it runs longer than ``seconds``.

    Uses a real-time interval timer and SIGALRM, which only works on the main thread of a
    Unix process; that is exactly where a Jupyter kernel runs notebook code. Elsewhere
    (Windows, a worker thread) it runs without a limit, and the grader's per-cell timeout
    is the backstop. The timer keeps firing every second after the deadline so that a
    learner's bare ``except:`` cannot swallow the first alarm and hang on. The previous
    handler and any previous timer are always restored.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if seconds is None or not usable:
        yield
        return
    armed = {"on": True}

    def on_alarm(signum: int, frame: Any) -> None:
        if armed["on"]:
            raise CheckTimeout()

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        armed["on"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:  # someone else's timer was running: give it back its time
            left = max(previous_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def _effective_limit(check_: Check, timeout: float | None) -> float | None:
    if timeout is not None:
        return timeout
    from_env = os.environ.get(TIMEOUT_ENV, "").strip()
    if from_env:
        try:
            return float(from_env)
        except ValueError:
            pass
    return check_.time_limit


# --------------------------------------------------------------------------- helpers for checkers


def call(fn: Any, *args: Any, label: str, hints: Sequence[tuple[str, str]] = ()) -> Any:
    """Call the learner's ``fn`` and explain any exception in terms of the call that failed.

    ``label`` is the call as the learner would write it, e.g. ``encode('hi', stoi)``.
    ``hints`` are (text, hint) pairs: when the exception's message contains ``text``, the
    first such hint is added to the feedback (the usual cause of that error in this
    exercise, such as a transposed weight for "cannot be multiplied").
    """
    if not callable(fn):
        raise CheckFailed(
            f"Expected a function to call as {label}, but got {describe(fn)}. "
            f"Pass the function itself (its name without parentheses)."
        )
    try:
        return fn(*args)
    except NotImplementedError as err:
        raise NotWritten(str(err)) from None
    except CheckFailed:
        raise
    except Exception as err:  # the learner's bug, reported rather than raised
        hint = next((h for text, h in hints if text in f"{type(err).__name__}: {err}"), "")
        raise CheckFailed(
            f"Calling {label} raised {type(err).__name__}: {err}\n"
            f"Read the error message, fix the function, re-run its cell, then run this check again."
            + (f"\nHint: {hint}" if hint else "")
        ) from None


def describe(value: Any, limit: int = 200) -> str:
    """A short, readable rendering of a value for feedback: type and (trimmed) repr."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            with_values = repr(value) if value.numel() <= 12 else f"values {_trim(value, limit)}"
            return f"a tensor of shape {tuple(value.shape)}, dtype {value.dtype}: {with_values}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    text, kind = _trim(value, limit), type(value).__name__
    return f"{text} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


def mismatch(what: str, expected: Any, got: Any, hint: str = "") -> CheckFailed:
    """The failure every check raises when an answer differs: what was tested, expected
    against got (each shortened by ``describe``), and a hint when the mistake is recognised."""
    message = f"{what}\n  expected: {describe(expected)}\n  got:      {describe(got)}"
    return CheckFailed(message + (f"\nHint: {hint}" if hint else ""))


def _trim(value: Any, limit: int) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- running a check


def _run(check_: Check, answer: Any, limit: float | None) -> tuple[bool, str]:
    """Run one checker and turn every outcome into (passed, feedback). Never raises."""
    try:
        with time_limit(limit):
            message = check_.checker(answer)
        return True, message or "All cases match the reference."
    except CheckTimeout:
        return False, (
            f"Your code took longer than {limit:g} s and was stopped. Look for a loop that "
            f"never ends (a `while` whose condition never becomes false) or work that grows "
            f"far faster than needed."
        )
    except NotWritten:
        return False, (
            "You have not written this yet: replace the line "
            "`raise NotImplementedError(...)` with your code, run that cell, then run this "
            "check again."
        )
    except NotImplementedError:
        return False, (
            "You have not written this yet: your code still raises NotImplementedError."
        )
    except CheckFailed as failure:
        return False, str(failure)
    except KeyboardInterrupt:
        return False, "The check was interrupted before it finished; run it again."
    except Exception as err:  # a wrong type upset the checker, or a checker bug
        return False, (
            f"Checking your answer raised {type(err).__name__}: {err}. This usually means "
            f"the answer has an unexpected type or shape; compare it with the task's example."
        )


def _format(result: CheckResult) -> str:
    plural = "" if result.max_points == 1 else "s"
    score = f"{result.points}/{result.max_points} point{plural}"
    if result.passed:
        head = f"✅ {result.name}: passed ({score}, {result.seconds:.2f} s)."
    else:
        head = f"❌ {result.name}: not passed yet ({score})."
    body = "\n".join("   " + line for line in result.feedback.splitlines())
    return f"{head}\n{body}" if body else head
