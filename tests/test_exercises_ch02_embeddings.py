"""Chapter 2's checks (``llmbook.exercises.checks.ch02_embeddings``): the table that
test_exercises_checks.py runs, and the experiment's margin over seeds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmbook.exercises.checks.ch02_embeddings import TARGET, train_bottleneck

CHAPTER = "02"

SETTINGS = {"code_size": 3, "hidden": 128, "lr": 1e-2, "steps": 600}


def keep_probability(counts, threshold):
    frequency = counts / counts.sum()
    return torch.sqrt(threshold / frequency).clamp(max=1.0)


def skipgram_pairs(ids, reach):
    centers, contexts = [torch.empty(0, dtype=torch.long)], [torch.empty(0, dtype=torch.long)]
    for d in range(1, min(int(reach.max()), len(ids) - 1) + 1):
        right, left = reach[:-d] >= d, reach[d:] >= d
        centers += [ids[:-d][right], ids[d:][left]]
        contexts += [ids[d:][right], ids[:-d][left]]
    return torch.cat(centers), torch.cat(contexts)


def skipgram_pairs_by_loops(ids, reach):
    """Another correct way: loops over positions (slower), the pairs in another order."""
    n, ids_list, pairs = len(ids), ids.tolist(), []
    for i in reversed(range(n)):
        r = int(reach[i])
        pairs += [(ids_list[i], ids_list[j]) for j in range(max(0, i - r), min(n, i + r + 1)) if j != i]
    centers = torch.tensor([c for c, _ in pairs], dtype=torch.long).reshape(-1)
    return centers, torch.tensor([x for _, x in pairs], dtype=torch.long).reshape(-1)


def sgns_step(center, context, centers, contexts, noise, lr):
    v = center.clone().requires_grad_(True)
    u = context.clone().requires_grad_(True)
    v_c = v[centers]
    per_pair = F.logsigmoid((v_c * u[contexts]).sum(-1)) + F.logsigmoid(-(u[noise] * v_c.unsqueeze(1)).sum(-1)).sum(-1)
    (-per_pair.mean()).backward()
    with torch.no_grad():
        return v - lr * v.grad, u - lr * u.grad


def sgns_step_index_add(center, context, centers, contexts, noise, lr):
    """Another correct way: the gradients by hand, scattered with index_add_."""
    v_c, u_o, u_n = center[centers], context[contexts], context[noise]
    b = len(centers)
    g_pos = torch.sigmoid((v_c * u_o).sum(-1)) - 1  # d(-log σ(s))/ds
    g_neg = torch.sigmoid((u_n * v_c[:, None]).sum(-1))  # d(-log σ(-s))/ds
    grad_v_c = (g_pos[:, None] * u_o + (g_neg[..., None] * u_n).sum(1)) / b
    grad_u_o = g_pos[:, None] * v_c / b
    grad_u_n = g_neg[..., None] * v_c[:, None] / b
    new_v = center.clone().index_add_(0, centers, -lr * grad_v_c)
    new_u = context.clone().index_add_(0, contexts, -lr * grad_u_o)
    new_u.index_add_(0, noise.reshape(-1), -lr * grad_u_n.reshape(-1, center.shape[1]))
    return new_v, new_u


def analogy(vectors, words, a, b, c, k=1):
    unit = vectors / vectors.norm(dim=-1, keepdim=True)
    ia, ib, ic = words.index(a), words.index(b), words.index(c)
    scores = unit @ (unit[ib] - unit[ia] + unit[ic])
    scores[[ia, ib, ic]] = float("-inf")
    return [words[i] for i in scores.argsort(descending=True)[:k].tolist()]


CORRECT = {
    "embeddings.bottleneck": [lambda: dict(SETTINGS), {**SETTINGS, "hidden": 256}],
    "embeddings.keep_probability": [
        keep_probability,
        lambda c, t: torch.minimum(torch.ones_like(c), (t * c.sum() / c).sqrt()),
    ],
    "embeddings.skipgram_pairs": [skipgram_pairs, skipgram_pairs_by_loops],
    "embeddings.sgns_step": [sgns_step, sgns_step_index_add],
    "embeddings.analogy": [analogy],
}


def _pairs(keep, wrap=False):
    def pairs(ids, reach):
        n, out = len(ids), []
        for i in range(n):
            for j in range(n):
                d = abs(i - j)
                if wrap:
                    d = min(d, n - d)
                if keep(i, j, d, reach):
                    out.append((int(ids[i]), int(ids[j])))
        return (
            torch.tensor([c for c, _ in out], dtype=torch.long).reshape(-1),
            torch.tensor([x for _, x in out], dtype=torch.long).reshape(-1),
        )

    return pairs


def _step(**how):
    def step(center, context, centers, contexts, noise, lr):
        v = center.clone().requires_grad_(True)
        u = context.clone().requires_grad_(True)
        v_c = v[centers]
        n = (v if how.get("noise") == "center" else u)[noise]
        per_pair = F.logsigmoid((v_c * u[contexts]).sum(-1))
        if how.get("negatives", True):
            per_pair = per_pair + F.logsigmoid(-(n * v_c.unsqueeze(1)).sum(-1)).sum(-1)
        loss = -(per_pair.sum() if how.get("reduce") == "sum" else per_pair.mean())
        loss.backward()
        sign = -1 if how.get("uphill") else 1
        with torch.no_grad():
            new_v = v - sign * lr * v.grad
            new_u = u - sign * lr * u.grad
        if how.get("only") == "center":
            return new_v, context.clone()
        return new_v, new_u

    return step


def _assigned(center, context, centers, contexts, noise, lr):
    v_c = center[centers].clone().requires_grad_(True)
    u_o = context[contexts].clone().requires_grad_(True)
    u_n = context[noise].clone().requires_grad_(True)
    per_pair = F.logsigmoid((v_c * u_o).sum(-1)) + F.logsigmoid(-(u_n * v_c[:, None]).sum(-1)).sum(-1)
    (-per_pair.mean()).backward()
    new_v, new_u = center.clone(), context.clone()
    with torch.no_grad():
        new_v[centers] = center[centers] - lr * v_c.grad
        new_u[contexts] = context[contexts] - lr * u_o.grad
        new_u[noise] = context[noise] - lr * u_n.grad
    return new_v, new_u


def _in_place(center, context, centers, contexts, noise, lr):
    new_v, new_u = sgns_step(center, context, centers, contexts, noise, lr)
    center.copy_(new_v)
    return center, new_u


def _analogy_no_exclude(vectors, words, a, b, c, k=1):
    unit = F.normalize(vectors, dim=-1)
    scores = unit @ (unit[words.index(b)] - unit[words.index(a)] + unit[words.index(c)])
    return [words[i] for i in scores.topk(k).indices.tolist()]


def _analogy_raw(vectors, words, a, b, c, k=1):
    ia, ib, ic = words.index(a), words.index(b), words.index(c)
    scores = vectors @ (vectors[ib] - vectors[ia] + vectors[ic])
    scores[[ia, ib, ic]] = float("-inf")
    return [words[i] for i in scores.topk(k).indices.tolist()]


MISTAKES = {
    "embeddings.bottleneck": [
        # the chapter's learning rate, which needs more than 600 steps here
        ({**SETTINGS, "lr": 3e-3}, ("lr=0.003", "at least 86%", "got:", "still learning", "larger learning rate")),
        ({**SETTINGS, "lr": 1e-4}, ("barely trained", "Raise the learning rate")),
        ({**SETTINGS, "lr": 0.3}, ("too large", "ten times smaller")),
        ({**SETTINGS, "code_size": 2}, ("PCA gets", "58.9% from 2", "tighter squeeze")),
        ({**SETTINGS, "hidden": 16}, ("narrow", "Try 128 or 256")),
        ({**SETTINGS, "steps": 200}, ("200 steps", "allows 600")),
        ({**SETTINGS, "code_size": 8}, "at most 3 numbers"),
        ({**SETTINGS, "steps": 5000}, "at most 600 steps"),
        ({"code_size": 3, "lr": 1e-2, "steps": 600}, "no 'hidden'"),
        ({**SETTINGS, "batch_size": 512}, "keys the check does not use"),
        (lambda: [3, 128, 1e-2, 600], "should return a dict"),
    ],
    "embeddings.keep_probability": [
        (lambda c, t: torch.sqrt(t / c).clamp(max=1.0), ("threshold=0.01", "expected", "frequency")),
        (lambda c, t: torch.sqrt(t * c.sum() / c), "clamp"),
        (lambda c, t: (t * c.sum() / c).clamp(max=1.0), "square root"),
        (lambda c, t: (1 - torch.sqrt(t * c.sum() / c)).clamp(min=0.0), "*dropping*"),
        (lambda c, t: torch.sqrt(c / c.sum() / t).clamp(max=1.0), "upside down"),
        (lambda c, t: keep_probability(c, t).tolist(), "torch.Tensor"),
    ],
    "embeddings.skipgram_pairs": [
        (
            _pairs(lambda i, j, d, r: 0 < d <= int(r[j])),
            ("reach=tensor([2, 1, 1, 1, 2])", "expected", "not of the context"),
        ),
        (_pairs(lambda i, j, d, r: 0 < d <= int(r.max())), "not the largest reach"),
        (_pairs(lambda i, j, d, r: 0 < d < int(r[i])), "one too narrow"),
        (_pairs(lambda i, j, d, r: d <= int(r[i])), "not its own context"),
        (_pairs(lambda i, j, d, r: 0 < d <= int(r[i]) and j > i), "only the contexts to the right"),
        (_pairs(lambda i, j, d, r: 0 < d <= int(r[i]), wrap=True), "wrap around"),
        (lambda ids, reach: [tuple(p) for p in torch.stack(skipgram_pairs(ids, reach), 1).tolist()], "two tensors"),
        (lambda ids, reach: tuple(t.float() for t in skipgram_pairs(ids, reach)), "torch.long"),
    ],
    "embeddings.sgns_step": [
        (_step(only="center"), ("centers (2,)", "context table is wrong", "center table only")),
        (lambda *a: tuple(reversed(sgns_step(*a))), "(context, center)"),
        (_step(uphill=True), "uphill"),
        (_step(reduce="sum"), "summed the loss"),
        (_step(negatives=False), "noise words"),
        (_step(noise="center"), "context table u"),
        (_assigned, "sum of all its changes"),
        (_in_place, "in place"),
    ],
    "embeddings.analogy": [
        (_analogy_no_exclude, "leave the three query words out"),
        (lambda v, w, a, b, c, k=1: analogy(v, w, b, a, c, k), "b - a + c"),
        (_analogy_raw, "normalise the vectors to length 1"),
        (
            lambda v, w, a, b, c, k=1: torch.tensor([w.index(x) for x in analogy(v, w, a, b, c, k)]),
            "list of k words",
        ),
        (lambda v, w, a, b, c, k=1: analogy(v, w, a, b, c, k + 1), "exactly k"),
    ],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reference_settings_pass_the_experiment_on_every_seed(seed: int) -> None:
    """The check trains with seed 0; the reference clears the target with a margin on
    seeds 0-2, so passing is not luck of the seed."""
    result = train_bottleneck(**SETTINGS, seed=seed)
    assert result["accuracy"] > TARGET + 0.02, result
