"""Chapter 12's checks (``llmbook.exercises.scaling``): correct answers pass, and the usual
mistakes fail with a hint that names them."""

from __future__ import annotations

import math

import pytest
import torch

from llmbook import distributed, scaling
from llmbook.exercises import check, checks_for_chapter
from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV

NAMES = ["scaling.rank_shard", "scaling.training_days", "scaling.zero_memory", "scaling.compute_optimal"]


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


# --------------------------------------------------------------------------- reference answers


def rank_shard(batch, rank, world_size):
    if len(batch) % world_size:
        raise ValueError("uneven")
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]


def training_days(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 86_400


def zero_memory_gb(n_params, n_gpus, stage):
    weights, grads, optimizer = 2 * n_params, 2 * n_params, 12 * n_params
    if stage >= 1:
        optimizer /= n_gpus
    if stage >= 2:
        grads /= n_gpus
    if stage >= 3:
        weights /= n_gpus
    return (weights + grads + optimizer) / 1e9


def compute_optimal(flops):
    n = math.sqrt(flops / 120)
    return n, 20 * n


CORRECT = {
    "scaling.rank_shard": rank_shard,
    "scaling.training_days": training_days,
    "scaling.zero_memory": zero_memory_gb,
    "scaling.compute_optimal": compute_optimal,
}


def failing(name: str, answer) -> str:
    result = check(name, answer)
    assert not result.passed, f"{name} accepted a wrong answer"
    return result.feedback


def test_chapter_12_registers_the_four_checks_in_order() -> None:
    assert [c.name for c in checks_for_chapter("12")] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_correct_answers_pass(name: str) -> None:
    result = check(name, CORRECT[name])
    assert result.passed, result.feedback
    assert result.points == result.max_points == 1


def test_library_equivalents_pass() -> None:
    assert check("scaling.rank_shard", distributed.shard)
    assert check("scaling.training_days", lambda n, d, g, p, m: scaling.training_seconds(
        scaling.training_flops(n, d), p, n_devices=g, mfu=m) / 86_400)
    assert check("scaling.zero_memory", lambda n, g, s: sum(scaling.per_gpu_state_bytes(n, g, s).values()) / 1e9)
    assert check("scaling.compute_optimal", scaling.compute_optimal)


@pytest.mark.parametrize("name", NAMES)
def test_untouched_stubs_say_so(name: str) -> None:
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    assert "not written" in failing(name, stub)


# --------------------------------------------------------------------------- rank shard


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda b, r, w: b[r::w], "like cards"),
        (lambda b, r, w: b[r * w:(r + 1) * w], "len(batch) // world_size"),
        (lambda b, r, w: b[: (r + 1) * (len(b) // w)], "start at rank * per_rank"),
        (lambda b, r, w: "no", "tensor of indices"),
    ],
)
def test_shard_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("scaling.rank_shard", wrong)


def test_shard_that_accepts_an_uneven_batch_fails() -> None:
    def lenient(batch, rank, world_size):
        per = len(batch) // world_size
        return batch[rank * per:(rank + 1) * per]

    feedback = failing("scaling.rank_shard", lenient)
    assert "ValueError" in feedback and "10 examples" in feedback


def test_shard_with_the_wrong_error_type_fails() -> None:
    def wrong_error(batch, rank, world_size):
        assert len(batch) % world_size == 0
        return rank_shard(batch, rank, world_size)

    assert "AssertionError" in failing("scaling.rank_shard", wrong_error)


def test_shard_feedback_names_the_call() -> None:
    feedback = failing("scaling.rank_shard", lambda b, r, w: b[r::w])
    assert "rank_shard(batch=" in feedback and "expected:" in feedback and "got:" in feedback


def test_shard_may_return_a_list() -> None:
    assert check("scaling.rank_shard", lambda b, r, w: rank_shard(b, r, w).tolist())


# --------------------------------------------------------------------------- training days


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) / 3, "forward pass only"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * m, "left out the utilisation"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * m * m, "multiplied by mfu"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * g, "number of GPUs"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 86_400, "seconds"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 24, "hours"),
        (lambda n, d, g, p, m: "a week", "should return a number"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 1.5, "6 · n_params"),
    ],
)
def test_training_days_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("scaling.training_days", wrong)


def test_training_days_accepts_a_tensor_scalar() -> None:
    assert check("scaling.training_days", lambda *a: torch.tensor(training_days(*a), dtype=torch.float64))


# --------------------------------------------------------------------------- ZeRO memory


def _zero(n, g, s, order=("optimizer", "gradients", "weights"), bytes_=(2, 2, 12), unit=1e9):
    parts = dict(zip(("weights", "gradients", "optimizer"), bytes_))
    return sum(n * b / (g if p in order[:s] else 1) for p, b in parts.items()) / unit


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda n, g, s: _zero(n, g, s, order=("weights", "gradients", "optimizer")), "wrong order"),
        (lambda n, g, s: _zero(n, g, s, bytes_=(4, 4, 8)), "fp32 training's bytes"),
        (lambda n, g, s: _zero(n, g, s, bytes_=(2, 2, 8)), "master copy"),
        (lambda n, g, s: _zero(n, g, s, unit=2**30), "GiB"),
        (lambda n, g, s: _zero(n, g, s, unit=1), "that is bytes"),
        (lambda n, g, s: 16 * n / g / 1e9, "whatever the stage"),
        (lambda n, g, s: _zero(n, g, max(0, s - 1)), "one stage behind"),
        (lambda n, g, s: None, "should return a number"),
    ],
)
def test_zero_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("scaling.zero_memory", wrong)


# --------------------------------------------------------------------------- compute-optimal


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda c: compute_optimal(c)[::-1], "parameters first"),
        (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)), "left out the 6"),
        (lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)), "forward only"),
        (lambda c: (c / 120, 20 * c / 120), "square root"),
        (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20), "not N / 20"),
        (lambda c: (compute_optimal(c)[0], 10 * compute_optimal(c)[0]), "tokens are D = 20"),
        (lambda c: compute_optimal(c)[0], "pair"),
    ],
)
def test_compute_optimal_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("scaling.compute_optimal", wrong)
