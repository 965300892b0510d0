"""Generation speed with and without the KV cache, at GPT-2 small's shape.

Without a cache, every new token re-runs the whole sequence so far through the model
(here up to 299 tokens through 124M parameters) only to read off the last position's
logits. With ``llmbook.attention.KVCache`` the prompt is processed once, and each
later step feeds one token and reuses the stored keys and values. Greedy decoding must
give the same tokens either way; the benchmark checks that, then reports both speeds
and their ratio. The weights are random (GPT-2's initialisation): speed does not
depend on what the weights say.

Run: ``python benchmarks/kv_cache.py`` (one to a few minutes on 2 cores: the uncached
run is the slow part), ``--quick`` for a smoke run with 20 new tokens.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import setup, table, yes_no

TARGET_SPEEDUP = 4.0
PROMPT_TOKENS = 100
NEW_TOKENS = 200


def timed_generate(model, prompt: torch.Tensor, new_tokens: int, use_cache: bool):
    from llmbook.generate import generate

    began = time.perf_counter()
    out = generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache)
    return out, time.perf_counter() - began


def run(quick: bool = False, seed: int = 0, verbose: bool = True) -> dict:
    from llmbook import GPT, GPTConfig

    threads = setup(seed)
    new_tokens = 20 if quick else NEW_TOKENS
    config = GPTConfig.from_preset("gpt2")
    model = GPT(config).eval()
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT_TOKENS), generator=gen)

    # Warm-up: first calls pay for allocations and kernel selection.
    for use_cache in (True, False):
        timed_generate(model, prompt, 2, use_cache)

    if verbose:
        print(f"generating {new_tokens} tokens with the cache ...", flush=True)
    cached, cached_s = timed_generate(model, prompt, new_tokens, use_cache=True)
    if verbose:
        print(f"  {cached_s:.1f} s; now without the cache ...", flush=True)
    uncached, uncached_s = timed_generate(model, prompt, new_tokens, use_cache=False)
    if verbose:
        print(f"  {uncached_s:.1f} s", flush=True)

    identical = torch.equal(cached, uncached)
    cached_tps, uncached_tps = new_tokens / cached_s, new_tokens / uncached_s
    speedup = cached_tps / uncached_tps
    out = {
        "quick": quick,
        "threads": threads,
        "model": "gpt2 shape (124M parameters, random weights)",
        "parameters": model.num_parameters(),
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": new_tokens,
        "batch": 1,
        "cached_seconds": cached_s,
        "uncached_seconds": uncached_s,
        "cached_tokens_per_s": cached_tps,
        "uncached_tokens_per_s": uncached_tps,
        "speedup": speedup,
        "identical_tokens": identical,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": identical and speedup >= TARGET_SPEEDUP,
    }
    if verbose:
        print(report(out))
    if not identical:
        first = int((cached != uncached).nonzero()[0, 1])
        raise AssertionError(f"cached and uncached greedy generation differ from position {first}")
    return out


def report(out: dict) -> str:
    rows = [
        ["without cache (reference)", f"{out['uncached_seconds']:.1f}",
         f"{out['uncached_tokens_per_s']:.2f}"],
        ["with KV cache", f"{out['cached_seconds']:.1f}", f"{out['cached_tokens_per_s']:.2f}"],
    ]
    return "\n".join([
        table(["generation", "wall time (s)", "new tokens/s"], rows),
        "",
        (f"- {out['model']}, batch {out['batch']}, prompt {out['prompt_tokens']} tokens, "
        f"{out['new_tokens']} new tokens, greedy; each path timed once over all "
        f"{out['new_tokens']} steps (prompt processing included), after a 2-token warm-up; "
        f"{out['threads']} threads, fp32."),
        f"- identical tokens with and without the cache: {yes_no(out['identical_tokens'])}",
        (f"- speed-up with the cache: {out['speedup']:.1f}x (target >= "
        f"{out['target_speedup']:.0f}x): **{'met' if out['target_met'] else 'NOT met'}**"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 new tokens instead of 200")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(quick=args.quick, seed=args.seed)


if __name__ == "__main__":
    main()
