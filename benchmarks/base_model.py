"""The course base model's recipe, chosen by measurement: a sweep of recipes at one CPU budget.

Each candidate is a ``llmbook.pretrained.Recipe`` trained from scratch on one thread,
then measured on a book it never saw (the recipe's ``held_out`` book, The Time Machine)
in full 256-byte windows, in nats per byte and bits per byte, beside the unigram and
bigram models counted on the same training text. CPU seconds (``time.process_time``,
one thread) are the budget measure: wall time on a shared machine says little.

Run: ``python benchmarks/base_model.py`` (every candidate: about half an hour on one
core), ``--only NAME`` for one candidate, ``--quick`` for a smoke run with tiny recipes.
The table it prints is kept in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from typing import Any

import torch
from _common import setup, table

from llmbook import datasets, pretrained
from llmbook.pretrained import BYTES_RECIPE, Recipe
from llmbook.train import evaluate


def _variant(name: str, model: dict[str, Any] | None = None, phases: tuple[dict[str, Any], ...] | None = None,
             ) -> Recipe:
    return dataclasses.replace(BYTES_RECIPE, name=name, model={**BYTES_RECIPE.model, **(model or {}), "name": name},
                               phases=phases or BYTES_RECIPE.phases)


def _phase(context: int, steps: int, batch: int, lr: float, warmup: int = 50, beta2: float = 0.99,
           seed: int = 0) -> dict[str, Any]:
    return {"context_length": context, "max_steps": steps, "batch_size": batch, "lr": lr, "min_lr": lr / 10,
            "warmup_steps": warmup, "betas": (0.9, beta2), "weight_decay": 0.1, "eval_interval": 0,
            "eval_batches": 8, "seed": seed}


# What the sweep compares: the previous recipe (128-byte windows only, 700 steps); full
# 256-byte windows throughout; short windows first, then full ones with the later position
# embeddings learned from scratch; the same with them tiled from the first 64 (the
# recipe); and a wider, deeper model that gets fewer steps in a similar budget.
_SECOND = {**BYTES_RECIPE.phases[1], "tile_positions": False, "max_steps": 400}
CANDIDATES: dict[str, Recipe] = {
    "previous recipe (3x96, T=128 only, 700 steps)": _variant(
        "sweep-previous", phases=(_phase(128, 700, 8, 8e-3, warmup=30, beta2=0.95),)),
    "3x96, T=256 only, 1100 steps": _variant(
        "sweep-256-only", phases=(_phase(256, 1100, 8, 8e-3, warmup=30, beta2=0.95),)),
    "3x96, T=64 then T=256, new positions from scratch": _variant(
        "sweep-no-tiling", phases=(BYTES_RECIPE.phases[0], _SECOND)),
    "3x96, T=64 then T=256, positions tiled (the recipe)": BYTES_RECIPE,
    "4x128, T=64 then T=256, positions tiled": _variant(
        "sweep-4x128", model={"n_embd": 128, "n_layer": 4},
        phases=(_phase(64, 1100, 16, 3e-3), {**BYTES_RECIPE.phases[1], "max_steps": 150})),
}


def measure(recipe: Recipe, eval_batches: int = 30) -> dict[str, Any]:
    """Train ``recipe`` from scratch on this thread; its held-out loss against n-gram baselines."""
    began = time.process_time()
    made = pretrained.pretrain(recipe, progress=False)
    cpu = time.process_time() - began
    train_ids, _ = pretrained.corpus_splits(recipe)
    held = torch.frombuffer(bytearray(pretrained.held_out_text(recipe).encode()), dtype=torch.uint8).long()
    T = recipe.model["n_positions"]
    loss = evaluate(made.model, datasets.TokenWindows(held, T), batch_size=8, max_batches=eval_batches)
    used = held[: eval_batches * 8 * T + 1]  # the bytes the evaluation read, for the baselines
    return {"recipe": recipe.name, "params": made.model.num_parameters(), "cpu_seconds": cpu,
            "train_bytes": recipe.train_bytes, "held_out_nats": loss,
            "unigram_nats": pretrained.ngram_cross_entropy(train_ids, used, 1),
            "bigram_nats": pretrained.ngram_cross_entropy(train_ids, used, 2)}


def run(quick: bool = False, only: str | None = None) -> dict[str, Any]:
    candidates = {k: v for k, v in CANDIDATES.items() if only is None or only in k}
    if quick:  # the machinery on tiny models, a few seconds each
        candidates = {k: dataclasses.replace(v, model={**v.model, "n_embd": 32, "n_layer": 1},
                                             phases=tuple({**p, "max_steps": 5} for p in v.phases))
                      for k, v in list(candidates.items())[:2]}
    results = {}
    for label, recipe in candidates.items():
        print(f"--- {label}", flush=True)
        results[label] = measure(recipe, eval_batches=2 if quick else 30)
        print(json.dumps(results[label]), flush=True)
    return {"candidates": results}


def report(results: dict[str, Any]) -> str:
    rows = []
    for label, r in results["candidates"].items():
        rows.append([label, f"{r['params']:,}", f"{r['cpu_seconds']:.0f}", f"{r['train_bytes'] / 1e6:.2f} MB",
                     f"{r['held_out_nats']:.3f}", f"{r['held_out_nats'] / math.log(2):.2f}",
                     f"{r['bigram_nats']:.3f}", f"{r['unigram_nats']:.3f}"])
    head = ["recipe", "parameters", "CPU s (1 thread)", "text shown", "held-out nats/byte", "bits/byte",
            "bigram nats/byte", "unigram nats/byte"]
    return table(head, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run the candidates whose label contains this text")
    args = parser.parse_args()
    setup(0)
    torch.set_num_threads(1)  # the budget is one core's CPU seconds
    print(report(run(quick=args.quick, only=args.only)))
