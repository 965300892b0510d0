"""The comparisons that every chapter's checks share, each written once (every chapter).

A check asks the same few questions of every answer: is it the kind of value the
exercise asks for (a tensor of a given shape, a pair of tensors, a number, a whole
number)? Does it equal the reference? If not, does it equal what a known mistake
computes, so that the feedback can name the mistake? Did the learner's function change
its inputs in place? And it shows a short, readable excerpt of what was expected and
what came back. ``core.mismatch`` is the expected-against-got failure; this module holds
the rest, so that every chapter answers these questions the same way.

Tensors are equal (``same``) when they have the same shape and every element agrees
within the tolerances, with nan and ±inf counting as equal only where the other tensor
holds the same non-finite value in the same position.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch

from llmbook.exercises.core import CheckFailed, describe, mismatch

RTOL = 1e-4
"""Relative tolerance for tensors: float32 arithmetic done in another order passes, a
mistake does not."""
ATOL = 1e-5
"""Absolute tolerance for tensors (for elements near zero)."""

Mistake = tuple[Any, str]
"""A known mistake: what it computes (a value, or a function of the check's inputs that
computes it) and the hint that fixes it."""


# --------------------------------------------------------------------------- equality


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a check's training on one thread, then give the caller its thread count back.

    An experiment check trains the learner's settings; on one thread the numbers are the
    same on every machine and the time limit is fair however many cores there are.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools (which are ints in Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def close(a: float, b: float, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    """Equal numbers, tolerant of float arithmetic done in another order, not of mistakes."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def same(got: Any, expected: Any, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """``got`` holds the numbers of ``expected``: the same shape, and every element within
    ``rtol``/``atol`` of its counterpart, nan and ±inf only where ``expected`` has the same.

    Either side may be a tensor or anything ``torch.as_tensor`` reads (numbers, nested
    lists, NumPy arrays); anything else is never the same. Whether a non-tensor answer is
    acceptable at all is the calling check's question, asked before this one.
    """
    a, b = _as_tensor(got), _as_tensor(expected)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
        return False
    if not (a.is_floating_point() or b.is_floating_point()):  # ids, counts, masks: exactly
        return bool((a == b).all())
    return bool(torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True))


def matches(got: Any, candidate: Any, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Equality for any kind of answer: tensors by ``same``, whole numbers exactly, other
    real numbers by ``close``, tuples and lists item by item, everything else (strings,
    dicts of counts) by ``==``."""
    if isinstance(got, torch.Tensor) or isinstance(candidate, torch.Tensor):
        return same(got, candidate, rtol=rtol, atol=atol)
    if isinstance(got, (tuple, list)) and isinstance(candidate, (tuple, list)):
        return len(got) == len(candidate) and all(
            matches(a, b, rtol=rtol, atol=atol) for a, b in zip(got, candidate, strict=True))
    if is_int(got) and is_int(candidate):
        return int(got) == int(candidate)
    if isinstance(got, numbers.Real) and isinstance(candidate, numbers.Real):
        return close(float(got), float(candidate))
    try:
        return bool(got == candidate)
    except Exception:  # a value that cannot even be compared is not equal
        return False


def known_mistake(got: Any, mistakes: Sequence[Mistake], *args: Any,
                  rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """The hint of the first known mistake whose result ``matches`` the learner's answer.

    Each mistake is (value, hint) or (function, hint); a function is called with ``args``
    (the check's inputs) to compute what the mistake gives, and one that cannot even run
    on these inputs explains nothing.
    """
    for wrong, why in mistakes:
        if callable(wrong):
            try:
                wrong = wrong(*args)
            except Exception:  # a mistake that cannot run explains nothing
                continue
        if matches(got, wrong, rtol=rtol, atol=atol):
            return why
    return None


# --------------------------------------------------------------------------- excerpts for feedback


def head(t: torch.Tensor, n: int = 6, digits: int = 4) -> list[float]:
    """The first ``n`` numbers of a tensor, rounded: short enough to read in feedback."""
    return [round(v, digits) for v in t.detach().double().reshape(-1)[:n].tolist()]


def first_row(t: torch.Tensor, n: int | None = None, digits: int = 4) -> list[float]:
    """The first vector along the last dimension (its first ``n`` numbers), rounded."""
    row = t.detach().double().reshape(-1, t.shape[-1])[0] if t.dim() else t.reshape(1)
    return [round(v, digits) for v in row[:n].tolist()]


def first_rows(t: torch.Tensor, rows: int = 2, n: int = 6, digits: int = 4) -> list[list[float]]:
    """The first rows of the first matrix in the last two dimensions, rounded."""
    t = t.detach().double()
    matrix = t.reshape(-1, t.shape[-2], t.shape[-1])[0] if t.dim() >= 2 else t.reshape(1, -1)
    return [[round(v, digits) for v in row.tolist()[:n]] for row in matrix[:rows]]


def first_difference(expected: str, got: str) -> str:
    """Where two texts first differ, with a little of each from there."""
    i = next((k for k, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
             min(len(expected), len(got)))
    return (f"the texts differ from character {i}: expected {expected[i:i + 25]!r}, "
            f"got {got[i:i + 25]!r}")


# --------------------------------------------------------------------------- the kind of answer


def _hint(hint: str) -> str:
    return f"\nHint: {hint}" if hint else ""


def tensor_answer(value: Any, label: str, *, shape: Sequence[int] | None = None,
                  expected: Any = None, hint: str = "",
                  shape_hint: str | None = None) -> torch.Tensor:
    """The learner's answer, which must be a tensor (of ``shape``, when given).

    ``expected`` is shown against a value that is not a tensor (by default, the shape
    wanted); ``shape_hint`` explains a wrong shape (by default, ``hint``).
    """
    if not isinstance(value, torch.Tensor):
        wanted = expected if expected is not None else (
            f"a tensor of shape {tuple(shape)}" if shape is not None else "a torch.Tensor")
        raise mismatch(f"{label} should return a torch.Tensor.", wanted, value, hint)
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise CheckFailed(
            f"{label} returned a tensor of shape {tuple(value.shape)}, expected {tuple(shape)}."
            + _hint(hint if shape_hint is None else shape_hint)
        )
    return value


_COUNTS = {2: "two", 3: "three"}


def tensor_tuple(value: Any, label: str, names: Sequence[str], *,
                 expected: Sequence[Any] | None = None, hint: str = "") -> tuple[torch.Tensor, ...]:
    """An answer that must be several tensors, such as ``(x, y)``, unpacked in order.

    ``expected``, when given, holds what each should be, and is shown against a wrong answer.
    """
    n = len(names)
    what = f"{label} should return {_COUNTS.get(n, n)} tensors, ({', '.join(names)})"
    if not (isinstance(value, (tuple, list)) and len(value) == n):
        if expected is not None:
            raise mismatch(f"{what}.", tuple(expected), value, hint)
        raise CheckFailed(f"{what}, but returned {describe(value)}." + _hint(hint))
    for index, (name, t) in enumerate(zip(names, value, strict=True)):
        if not isinstance(t, torch.Tensor):
            what = f"{label}: {name} should be a torch.Tensor"
            if expected is not None:
                raise mismatch(f"{what}.", expected[index], t, hint)
            raise CheckFailed(f"{what}, but it is {describe(t)}." + _hint(hint))
    return tuple(value)


def token_ids(t: torch.Tensor, label: str, name: str) -> None:
    """Token ids (and targets) must be ``torch.long``: nn.Embedding and F.cross_entropy
    take nothing else."""
    if t.dtype != torch.long:
        raise CheckFailed(
            f"{label}: {name} has dtype {t.dtype}; token ids and targets must be torch.long "
            f"(int64), the integers nn.Embedding and F.cross_entropy expect.\n"
            f"Hint: torch.tensor(ids, dtype=torch.long), or .long()."
        )


def scalar(value: Any) -> Any:
    """A one-element tensor or NumPy array as the Python number it holds; anything else
    as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and getattr(value, "size", None) == 1:
        return value.item()
    return value


def number(value: Any, label: str, expected: Any = None) -> float:
    """The learner's answer, which must be a real number (a one-element tensor is fine)."""
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if expected is None:
            raise CheckFailed(f"{label} should return a number, but returned {describe(value)}.")
        raise mismatch(f"{label} should return a number.", expected, value)
    return cast(float, value)  # an int stays an int: a check may ask whether it is one


def whole_number(value: Any, label: str, expected: int, *, floats_ok: bool = False,
                 hint: str = "") -> int:
    """The learner's answer, which must be an int (a count, a number of bytes).

    With ``floats_ok`` a float that is a whole number (``640.0``) counts as that int;
    otherwise it fails, saying so when its value is right.
    """
    value = scalar(value)
    if is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        if floats_ok:
            return int(value)
        if int(value) == expected:
            raise CheckFailed(
                f"{label} has the right value but as a float ({value!r}); the answer is a "
                f"whole number: return an int (use // rather than /, or int(...))."
            )
    raise mismatch(f"{label} should return a whole number (an int).", expected, value, hint)


# --------------------------------------------------------------------------- inputs left alone


def unchanged(label: str, given: Sequence[Any], originals: Sequence[Any],
              names: Sequence[str] | None = None) -> None:
    """Fail when the learner's function changed one of its arguments in place.

    ``given`` are the objects the function received, ``originals`` copies taken before
    the call (``None`` where an argument is ``None``); ``names`` name the arguments.
    """
    for index, (g, o) in enumerate(zip(given, originals, strict=True)):
        if isinstance(o, torch.Tensor):
            kept = isinstance(g, torch.Tensor) and g.shape == o.shape and torch.equal(g, o)
        else:
            kept = g == o
        if kept:
            continue
        name = names[index] if names else None
        if isinstance(o, list):
            raise CheckFailed(
                f"{label} changed the list it was given{f' (`{name}`)' if name else ''} to "
                f"{describe(g)}; build and return a new list instead, leaving the input as "
                f"it was."
            )
        n = name or "x"
        raise CheckFailed(
            f"{label} changed {f'its argument `{name}`' if name else 'one of its arguments'} "
            f"in place (an in-place operation such as `{n} -= ...`, `{n} /= ...` or "
            f"`{n}[...] = ...`). Make a new tensor instead (`y = {n} - ...`): the caller "
            f"still needs its input."
        )


__all__ = [
    "ATOL", "RTOL", "Mistake", "close", "first_difference", "first_row", "first_rows", "head",
    "is_int", "known_mistake", "matches", "number", "same", "scalar", "tensor_answer",
    "tensor_tuple", "token_ids", "unchanged", "whole_number",
]
