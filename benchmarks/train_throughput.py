"""Training throughput: fused attention (``attn_impl="sdpa"``) against the explicit masked softmax.

The reference is the same GPT with ``GPTConfig(attn_impl="explicit")``: scores, mask,
softmax and weighted sum written out as separate tensor operations (see
``llmbook/attention.py``). Both models start from identical weights, see identical
batches, and run full training steps as ``llmbook.train.train`` does: forward, loss,
backward, gradient clipping and an AdamW step. After a warm-up the two variants take
turns (the order alternates every repeat) and each reports its median tokens/s, so slow
moments of a shared machine hit both alike. The ratio is the result; absolute numbers
depend on the machine and its load.

Run: ``python benchmarks/train_throughput.py`` (about a minute), ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from _common import median, setup, table


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    context: int
    batch: int
    vocab_size: int = 65
    steps_per_sample: int = 5  # steps timed together in one measurement

    @property
    def tokens_per_step(self) -> int:
        return self.context * self.batch


SHAPES = [
    # nanoGPT's CPU character model (benchmarks/shakespeare_char.py trains it).
    Shape("char, context 64", 4, 4, 128, context=64, batch=12, steps_per_sample=10),
    # The same model with a 4x longer context, where attention's T x T work starts to show.
    Shape("char, context 256", 4, 4, 128, context=256, batch=12, steps_per_sample=3),
]


def build(shape: Shape, attn_impl: str, state: dict | None = None):
    from llmbook import GPT, GPTConfig
    from llmbook.train import configure_optimizer

    config = GPTConfig(vocab_size=shape.vocab_size, n_positions=shape.context,
                       n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head,
                       bias=False, attn_impl=attn_impl)
    model = GPT(config)
    if state is not None:
        model.load_state_dict(state)
    model.train()
    optimizer = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    return model, optimizer


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def measure_shape(shape: Shape, repeats: int, warmup: int, steps: int | None = None) -> dict:
    """Median tokens/s of both variants at one shape, interleaved over ``repeats`` rounds."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, shape.vocab_size, (shape.batch, shape.context), generator=gen)
    y = torch.randint(0, shape.vocab_size, (shape.batch, shape.context), generator=gen)
    sdpa, sdpa_opt = build(shape, "sdpa")
    explicit, explicit_opt = build(shape, "explicit", sdpa.state_dict())
    variants = {"sdpa": (sdpa, sdpa_opt), "explicit": (explicit, explicit_opt)}

    # Same weights, same batch: the first losses must agree (the two are one model).
    first = {name: train_step(m, o, x, y) for name, (m, o) in variants.items()}
    if abs(first["sdpa"] - first["explicit"]) > 1e-4:
        raise AssertionError(f"sdpa and explicit disagree on the first loss: {first}")
    for m, o in variants.values():
        for _ in range(warmup):
            train_step(m, o, x, y)

    steps = steps or shape.steps_per_sample
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for rep in range(repeats):
        for name in order if rep % 2 == 0 else order[::-1]:
            m, o = variants[name]
            began = time.perf_counter()
            for _ in range(steps):
                train_step(m, o, x, y)
            seconds = time.perf_counter() - began
            samples[name].append(steps * shape.tokens_per_step / seconds)
    sdpa_tps, explicit_tps = median(samples["sdpa"]), median(samples["explicit"])
    return {
        "shape": shape.__dict__,
        "repeats": repeats,
        "steps_per_sample": steps,
        "sdpa_tokens_per_s": sdpa_tps,
        "explicit_tokens_per_s": explicit_tps,
        "ratio": sdpa_tps / explicit_tps,
        "sdpa_samples": samples["sdpa"],
        "explicit_samples": samples["explicit"],
        "first_loss": first["sdpa"],
    }


def run(quick: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    threads = setup(seed)
    repeats, warmup = (3, 1) if quick else (9, 3)
    results = []
    for shape in SHAPES:
        if verbose:
            print(f"timing {shape.name} ...", flush=True)
        steps = 2 if quick else None
        results.append(measure_shape(shape, repeats, warmup, steps))
    out = {"quick": quick, "threads": threads, "shapes": results}
    if verbose:
        print(report(out))
    return out


def report(out: dict) -> str:
    rows = []
    for r in out["shapes"]:
        s = r["shape"]
        rows.append([
            s["name"], f"{s['n_layer']}L/{s['n_head']}H/{s['n_embd']}d",
            f"{s['batch']} x {s['context']}", f"{r['explicit_tokens_per_s']:,.0f}",
            f"{r['sdpa_tokens_per_s']:,.0f}", f"{r['ratio']:.2f}x",
        ])
    r0 = out["shapes"][0]
    return "\n".join([
        table(["shape", "model", "batch x context", "explicit tokens/s (reference)",
               "sdpa tokens/s", "sdpa / explicit"], rows),
        "",
        (f"- medians of {r0['repeats']} interleaved measurements per variant, each a run of "
        f"full training steps (forward, backward, clip, AdamW) after warm-up; "
        f"{out['threads']} threads; fp32."),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few, short measurements")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(quick=args.quick, seed=args.seed)


if __name__ == "__main__":
    main()
