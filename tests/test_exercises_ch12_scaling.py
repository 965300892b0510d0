"""Chapter 12's checks (``llmbook.exercises.checks.ch12_scaling``): the table that
test_exercises_checks.py runs, and tests of the checks' own references."""

from __future__ import annotations

import math

import pytest
import torch

from llmbook import scaling
from llmbook.exercises.checks import ch12_scaling as checks

CHAPTER = "12"


def scaler_step(grads, scale, good_steps, growth_interval):
    if not all(torch.isfinite(g).all() for g in grads):
        return None, scale / 2, 0
    grads = [g.float() / scale for g in grads]
    good_steps += 1
    if good_steps == growth_interval:
        scale, good_steps = scale * 2, 0
    return grads, scale, good_steps


def ring_all_reduce(tensors, send):
    world = len(tensors)
    chunks = [list(torch.tensor_split(t.clone(), world)) for t in tensors]
    for step in range(world - 1):  # reduce-scatter
        for rank in range(world):
            right, c = (rank + 1) % world, (rank - step) % world
            chunks[right][c] = chunks[right][c] + send(rank, right, c, chunks[rank][c])
    for rank in range(world):
        c = (rank + 1) % world
        chunks[rank][c] = chunks[rank][c] / world
    for step in range(world - 1):  # all-gather
        for rank in range(world):
            right, c = (rank + 1) % world, (rank + 1 - step) % world
            chunks[right][c] = send(rank, right, c, chunks[rank][c])
    return [torch.cat(cs) for cs in chunks]


def ring_all_reduce_early_mean(tensors, send):
    """Flat buffers divided by R first, another starting chunk, each step's messages sent
    before any is delivered: must pass too."""
    world, n = len(tensors), len(tensors[0])
    edges = [c * (n // world) + min(c, n % world) for c in range(world + 1)]
    buffers = [t / world for t in tensors]  # new tensors: the inputs stay as they were
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(world - 1):
            arrived = []
            for rank in range(world):
                c = (rank + 2 - step if phase == "all-gather" else rank + 1 - step) % world
                a, b = edges[c], edges[c + 1]
                arrived.append((c, send(rank, (rank + 1) % world, c, buffers[rank][a:b])))
            for rank, (c, values) in enumerate(arrived):
                right, a, b = (rank + 1) % world, edges[c], edges[c + 1]
                if phase == "reduce-scatter":
                    buffers[right][a:b] += values
                else:
                    buffers[right][a:b] = values
    return buffers


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
    "scaling.ring_all_reduce": [ring_all_reduce, ring_all_reduce_early_mean],
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


def _ring(divide=True, left=False, gather=True, start=1, in_place=False, whole=False, stale=False):
    """The ring with one mistake: the sum, the left neighbour, the reduce-scatter alone,
    the all-gather started one chunk off, the inputs' views changed, whole tensors, the
    sender's own numbers passed on instead of the running sum."""

    def ring(tensors, send):
        world = len(tensors)
        if whole:  # everyone sends to rank 0, which sends the mean back
            for rank in range(1, world):
                send(rank, 0, 0, tensors[rank])
            mean = torch.stack(tensors).mean(0)
            for rank in range(1, world):
                send(0, rank, 0, mean)
            return [mean.clone() for _ in tensors]
        side = -1 if left else 1
        chunks = [list(torch.tensor_split(t if in_place else t.clone(), world)) for t in tensors]
        for step in range(world - 1):
            for rank in range(world):
                nxt, c = (rank + side) % world, (rank - side * step) % world
                mine = torch.tensor_split(tensors[rank], world)[c] if stale else chunks[rank][c]
                received = send(rank, nxt, c, mine)
                if in_place:
                    chunks[nxt][c] += received
                else:
                    chunks[nxt][c] = chunks[nxt][c] + received
        for rank in range(world):
            c = (rank + side) % world
            if divide:
                chunks[rank][c] = chunks[rank][c] / world
        for step in range(world - 1 if gather else 0):
            for rank in range(world):
                nxt, c = (rank + side) % world, (rank + side * (start - step)) % world
                chunks[nxt][c] = send(rank, nxt, c, chunks[rank][c])
        return [torch.cat(cs) for cs in chunks]

    return ring


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
    "scaling.ring_all_reduce": [
        (_ring(divide=False), ("the sum of the ranks' tensors", "expected:", "got:")),
        (_ring(left=True), ("left neighbour", "ring_all_reduce(<4 ranks, 10 numbers each")),
        (_ring(gather=False), "reduce-scatter alone"),
        (_ring(start=0), ("Off by one", "chunk")),
        (_ring(in_place=True), "tensor_split returns views"),
        (_ring(whole=True), ("carries a whole tensor", "(R - 1) * n = 30")),
        (_ring(stale=True), ("sent its own numbers", "reduce-scatter step 1")),
        (lambda ts, send: [torch.stack(ts).mean(0) for _ in ts], "sent no messages"),
        (lambda ts, send: ring_all_reduce(ts, send)[0], "should return a list of 4 tensors"),
        (lambda ts, send: send(0, 1, 0, ts[0].tolist()), "must be a tensor"),
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
