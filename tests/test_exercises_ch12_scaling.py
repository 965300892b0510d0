"""Chapter 12's checks (``llmbook.exercises.checks.ch12_scaling``): the table that
test_exercises_checks.py runs, and tests of the checks' own references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook import scaling
from llmbook.exercises.checks import ch12_scaling as checks
from llmbook.model import IGNORE_INDEX

CHAPTER = "12"


def scaler_step(grads, scale, good_steps, growth_interval):
    if not all(torch.isfinite(g).all() for g in grads):
        return None, scale / 2, 0
    grads = [g.float() / scale for g in grads]
    good_steps += 1
    if good_steps == growth_interval:
        scale, good_steps = scale * 2, 0
    return grads, scale, good_steps


def accumulated_grad(weights, micro_batches):
    counted = sum((y != IGNORE_INDEX).sum() for _, y in micro_batches)
    w = weights.clone().requires_grad_(True)
    for x, y in micro_batches:
        logits = (x @ w).flatten(0, 1)
        loss = F.cross_entropy(logits, y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        (loss / counted).backward()
    return w.grad


def accumulated_grad_weighted(weights, micro_batches):
    """Each micro-batch's mean, weighted by its share of the counted tokens: must pass too."""
    counts = [(y != IGNORE_INDEX).sum() for _, y in micro_batches]
    total = sum(counts)
    grad = torch.zeros_like(weights)
    for (x, y), count in zip(micro_batches, counts, strict=True):
        w = weights.clone().requires_grad_(True)
        loss = F.cross_entropy((x @ w).flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        (loss * count / total).backward()
        grad += w.grad
    return grad


def zero1_step(param, rank_grads, m_shards, v_shards, step, lr):
    world = len(rank_grads)
    g = torch.stack(rank_grads).mean(0)
    size = -(-len(param) // world)
    new, ms, vs = param.clone(), [], []
    for r in range(world):
        a, b = min(r * size, len(param)), min((r + 1) * size, len(param))
        m = 0.9 * m_shards[r] + 0.1 * g[a:b]
        v = 0.999 * v_shards[r] + 0.001 * g[a:b] ** 2
        update = (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
        new[a:b] = param[a:b] - lr * update
        ms.append(m)
        vs.append(v)
    return {"param": new, "m": ms, "v": vs}


def compute_optimal(flops):
    n = math.sqrt(flops / 120)
    return n, 20 * n


def _fit_and_predict(sizes, losses, target_params):
    """L = E + A N^-alpha: for many E, a line through log(L - E) against log N; the best E."""
    x = torch.stack([torch.ones_like(sizes), sizes.log()], dim=1)
    best = None
    for e in torch.linspace(0, float(losses.min()) * 0.999, 1000).tolist():
        y = torch.log(losses - e)[:, None]
        coef = torch.linalg.lstsq(x, y).solution
        error = float(((x @ coef - y) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, e, coef[:, 0].tolist())
    _, e, (log_a, slope) = best
    return e + math.exp(log_a + slope * math.log(target_params))


def predict_loss(run, max_params, target_params):
    sizes = torch.logspace(3, math.log10(max_params), 16, dtype=torch.float64)
    losses = torch.tensor([run(float(n)) for n in sizes], dtype=torch.float64)
    return _fit_and_predict(sizes, losses, target_params)


def predict_loss_alpha_grid(run, max_params, target_params):
    """For many alpha, E and A by linear least squares (L is linear in them); the best alpha:
    must pass too."""
    sizes = torch.logspace(3, 7, 16, dtype=torch.float64)
    losses = torch.tensor([run(float(n)) for n in sizes], dtype=torch.float64)[:, None]
    best = None
    for alpha in torch.linspace(0.05, 1.0, 2000).tolist():
        x = torch.stack([torch.ones_like(sizes), sizes**-alpha], dim=1)
        coef = torch.linalg.lstsq(x, losses).solution
        error = float(((x @ coef - losses) ** 2).sum())
        if best is None or error < best[0]:
            best = (error, alpha, coef[:, 0].tolist())
    _, alpha, (e, a) = best
    return e + a * target_params**-alpha


CORRECT = {
    "scaling.loss_scaler": [scaler_step],
    "scaling.masked_accumulation": [accumulated_grad, accumulated_grad_weighted],
    "scaling.zero1_step": [zero1_step],
    "scaling.compute_optimal": [compute_optimal, scaling.compute_optimal],
    "scaling.scaling_law": [predict_loss, predict_loss_alpha_grid],
}


def _scaler(unscale=None, nan_ok=False, reset=True, halve=True, grow=True):
    def step(grads, scale, good, interval):
        overflow = any((g.isinf() if nan_ok else ~g.isfinite()).any() for g in grads)
        if overflow:
            return None, scale / 2 if halve else scale, 0 if reset else good
        out = [unscale(g, scale) if unscale else g.float() / scale for g in grads]
        good += 1
        if grow and good == interval:
            return out, scale * 2, 0
        return out, scale, good

    return step


def _accumulate(loss_of):
    def accumulated(weights, micro_batches):
        w = weights.clone().requires_grad_(True)
        for x, y in micro_batches:
            loss_of(x @ w, y, micro_batches).backward()
        return w.grad

    return accumulated


def _ce(logits, y, reduction="mean", ignore=IGNORE_INDEX):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=ignore, reduction=reduction)


def _zero(**kw):
    def step(param, rank_grads, m_shards, v_shards, step, lr):
        return checks.reference_zero1_step(param, rank_grads, m_shards, v_shards, step, lr, **kw)

    return step


def _power_law(run, max_params, target_params):
    sizes = torch.logspace(3, 7, 16, dtype=torch.float64)
    losses = torch.tensor([run(float(n)) for n in sizes], dtype=torch.float64)
    x = torch.stack([torch.ones_like(sizes), sizes.log()], dim=1)
    log_a, slope = torch.linalg.lstsq(x, losses.log()[:, None]).solution[:, 0].tolist()
    return math.exp(log_a + slope * math.log(target_params))


def _narrow(run, max_params, target_params):
    """The full law, fit to runs that span one decade only."""
    sizes = torch.logspace(math.log10(max_params) - 1, math.log10(max_params), 16, dtype=torch.float64)
    losses = torch.tensor([run(float(n)) for n in sizes], dtype=torch.float64)
    return _fit_and_predict(sizes, losses, target_params)


MISTAKES = {
    "scaling.loss_scaler": [
        (_scaler(unscale=lambda g, s: (g / s).float()), ("divide in fp32", "rounds to 0")),
        (_scaler(unscale=lambda g, s: g.float()), "still multiplied by the scale"),
        (_scaler(nan_ok=True), "nan is an overflow too"),
        (_scaler(reset=False), "reset the count"),
        (_scaler(halve=False), "halve the scale"),
        (_scaler(grow=False), "double the scale"),
        (lambda g, s, n, i: [x.float() / s for x in g], "triple"),
    ],
    "scaling.masked_accumulation": [
        (_accumulate(lambda logits, y, mb: _ce(logits, y) / len(mb)), "chapter's recipe"),
        (_accumulate(lambda logits, y, mb: _ce(logits, y)), "mean losses"),
        (
            _accumulate(lambda logits, y, mb: _ce(logits, y, "sum") / sum(t.numel() for _, t in mb)),
            "must not count",
        ),
        (_accumulate(lambda logits, y, mb: _ce(logits, y, "sum")), "divide the summed token losses"),
        (lambda w, mb: accumulated_grad(w, mb).tolist(), ("torch.Tensor", "accumulated_grad(weights (4, 5)")),
    ],
    "scaling.zero1_step": [
        (_zero(reduce="sum"), "average the ranks' gradients"),
        (_zero(own=True), "reduce-scatter"),
        (_zero(correct=False), "bias correction"),
        (_zero(gather=False), "all-gather"),
        (lambda *args: zero1_step(*args)["param"], "should return a dict"),
    ],
    "scaling.compute_optimal": [
        (lambda c: compute_optimal(c)[::-1], "parameters first"),
        (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)), "left out the 6"),
        (lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)), "forward only"),
        (lambda c: (c / 120, 20 * c / 120), "square root"),
        (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20), "not N / 20"),
        (lambda c: (compute_optimal(c)[0], 10 * compute_optimal(c)[0]), "tokens are D = 20"),
        (lambda c: compute_optimal(c)[0], "pair"),
    ],
    "scaling.scaling_law": [
        (_power_law, ("pure power law", "expected:", "got:")),
        (_narrow, "decades"),
        (lambda run, m, t: [run(float(n)) for n in range(1000, 1000 + 17)][-1], "make at most 16 runs"),
        (lambda run, m, t: run(1e8), "between 1e3 and 1e7"),
        (lambda run, m, t: 2.0, "call run(n_params)"),
    ],
}


def test_the_zero1_reference_is_adam_on_one_gpu() -> None:
    g = torch.Generator().manual_seed(0)
    param = torch.randn(10, generator=g, dtype=torch.float64)
    world, lr = 4, 0.01
    p = param.clone().requires_grad_(True)
    adam = torch.optim.Adam([p], lr=lr, betas=checks.BETAS, eps=checks.ADAM_EPS)
    bounds = checks.shard_bounds(10, world)
    ms = [torch.zeros(b - a, dtype=torch.float64) for a, b in bounds]
    vs = [torch.zeros(b - a, dtype=torch.float64) for a, b in bounds]
    current = param.clone()
    for step in range(1, 4):
        grads = [torch.randn(10, generator=g, dtype=torch.float64) for _ in range(world)]
        p.grad = torch.stack(grads).mean(0)
        adam.step()
        out = checks.reference_zero1_step(current, grads, ms, vs, step, lr)
        current, ms, vs = out["param"], out["m"], out["v"]
        torch.testing.assert_close(current, p.detach())
    assert [b - a for a, b in bounds] == [3, 3, 3, 1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_the_reference_fit_passes_with_a_margin_on_other_laws(seed: int) -> None:
    runs = checks.TrainingRuns(seed)
    error = predict_loss(runs, checks.LAW_MAX_PARAMS, checks.LAW_TARGET) / runs.true_loss(checks.LAW_TARGET) - 1
    assert abs(error) < checks.LAW_TOLERANCE / 2
