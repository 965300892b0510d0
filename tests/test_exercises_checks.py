"""Every chapter's checks, from one table per chapter: the answers a check must accept, and
the usual mistakes it must turn down with a hint that names them.

Each ``test_exercises_chNN_slug.py`` beside this file holds its chapter's table:

- ``CHAPTER``: the chapter number, as the checks register it;
- ``CORRECT``: check name -> answers that must pass (the reference first, then other
  correct ways to write it), in the order the chapter registers its checks;
- ``MISTAKES``: check name -> (wrong answer, text) pairs, where text is one substring, or
  a tuple of substrings, that the feedback must contain: the hint that names the mistake,
  and where it matters the failing input and the expected and actual values.

That module also holds any test of its chapter that does not fit the table. This file
runs the tables (``pytest tests/test_exercises_checks.py -k gpt.`` runs chapter 7's).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from llmbook.exercises import check, checks_for_chapter, registry
from llmbook.exercises.compare import known_mistake, same, unchanged
from llmbook.exercises.core import CheckFailed


def _tables() -> list[ModuleType]:
    """The chapters' tables. One that cannot be imported is left out here (pytest reports its
    import error when it collects that module, and the first test below fails), so that it
    does not stop the other chapters' tests."""
    tables = []
    for path in sorted(Path(__file__).parent.glob("test_exercises_ch[0-9][0-9]_*.py")):
        try:
            tables.append(importlib.import_module(path.stem))
        except Exception:  # reported where pytest collects that module
            continue
    return tables


TABLES = _tables()


CORRECT = [
    pytest.param(name, answer, id=f"{name}-{index}")
    for table in TABLES
    for name, answers in table.CORRECT.items()
    for index, answer in enumerate(answers)
]
MISTAKES = [
    pytest.param(name, answer, (texts,) if isinstance(texts, str) else texts, id=f"{name}-{index}")
    for table in TABLES
    for name, cases in table.MISTAKES.items()
    for index, (answer, texts) in enumerate(cases)
]
REFERENCES = [pytest.param(name, answers[0], id=name) for table in TABLES for name, answers in table.CORRECT.items()]


def test_there_is_a_table_for_every_chapter() -> None:
    assert [table.CHAPTER for table in TABLES] == [f"{n:02d}" for n in range(1, 14)]


def test_every_registered_check_is_in_a_table() -> None:
    tabled = [name for table in TABLES for name in table.CORRECT]
    assert sorted(tabled) == sorted(registry())


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.__name__.removeprefix("test_exercises_"))
def test_a_chapter_registers_its_checks_in_exercise_order(table: ModuleType) -> None:
    assert [c.name for c in checks_for_chapter(table.CHAPTER)] == list(table.CORRECT)
    assert list(table.MISTAKES) == list(table.CORRECT), "every check needs its known mistakes"


@pytest.mark.parametrize(("name", "answer"), CORRECT)
def test_a_correct_answer_passes(name: str, answer: Any) -> None:
    result = check(name, answer)
    assert result.passed, result.feedback
    assert result.points == result.max_points == 1


# A learner's mistake may use tensor.T on a batch, which torch warns about: that is the mistake.
@pytest.mark.filterwarnings("ignore:The use of `x.T`")
@pytest.mark.parametrize(("name", "answer", "texts"), MISTAKES)
def test_a_mistake_fails_and_the_feedback_names_it(name: str, answer: Any, texts: tuple[str, ...]) -> None:
    result = check(name, answer)
    assert not result.passed, f"{name} accepted a wrong answer"
    assert result.points == 0
    for text in texts:
        assert text in result.feedback, f"{text!r} is not in the feedback:\n{result.feedback}"


@pytest.mark.parametrize(("name", "reference"), REFERENCES)
def test_an_unwritten_answer_is_reported_as_not_written(name: str, reference: Any) -> None:
    def stub(*args: Any) -> Any:
        raise NotImplementedError("Write your solution here")

    # A check that takes several functions gets a stub for each of them.
    answer = tuple(stub for _ in reference) if isinstance(reference, tuple) else stub
    result = check(name, answer)
    assert not result.passed and "not written this yet" in result.feedback, result.feedback


# --------------------------------------------------------------------------- the shared comparisons


def test_same_compares_non_finite_values_position_by_position() -> None:
    inf, nan = float("inf"), float("nan")
    expected = torch.tensor([1.0, inf, -inf, nan])
    assert same(torch.tensor([1.0, inf, -inf, nan]), expected)
    assert not same(torch.tensor([1.0, -inf, inf, nan]), expected)  # infinities of the wrong sign
    assert not same(torch.tensor([1.0, inf, -inf, 0.0]), expected)  # a number where nan was
    assert not same(torch.tensor([nan, inf, -inf, nan]), expected)  # nan where a number was
    assert not same(torch.tensor([inf, 1.0]), torch.tensor([1.0, inf]))  # same counts, moved
    assert not same(torch.zeros(2, 3), torch.zeros(3, 2))
    assert same([[0.5, 1.0]], torch.tensor([[0.5, 1.0]]))  # a nested list reads as a tensor
    assert not same("0.5", torch.tensor(0.5))


def test_same_compares_integers_exactly_and_floats_within_tolerance() -> None:
    assert not same(torch.tensor([100_000]), torch.tensor([100_001]))
    assert same(torch.tensor([1.0]), torch.tensor([1.0 + 1e-6]))
    assert not same(torch.tensor([1.0]), torch.tensor([1.001]))


def test_known_mistake_names_the_first_match_and_skips_mistakes_that_cannot_run() -> None:
    mistakes = [
        (lambda x: x.undefined_method(), "never: this mistake raises"),
        (lambda x: 2 * x, "doubled"),
        (lambda x: x + x, "added to itself"),
        ([1, 2], "a list"),
        (math.pi, "pi"),
    ]
    assert known_mistake(torch.tensor([2.0, 4.0]), mistakes, torch.tensor([1.0, 2.0])) == "doubled"
    assert known_mistake([1, 2], mistakes, torch.tensor([0.0])) == "a list"
    assert known_mistake(3.14159265, mistakes, torch.tensor([0.0])) == "pi"
    assert known_mistake(torch.tensor([9.0]), mistakes, torch.tensor([1.0])) is None


def test_unchanged_names_the_argument_that_changed() -> None:
    x = torch.ones(3)
    unchanged("f(x)", [x], [x.clone()], ["x"])
    with pytest.raises(CheckFailed, match="`logits` in place"):
        unchanged("f(logits)", [x * 2], [x], ["logits"])
    with pytest.raises(CheckFailed, match="changed the list it was given"):
        unchanged("f(ids)", [[1, 2, 3]], [[1, 2]], ["ids"])
