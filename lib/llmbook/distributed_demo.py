"""A small data-parallel training run to launch with ``torchrun`` (chapter 12).

    python -m torch.distributed.run --nproc_per_node=2 -m llmbook.distributed_demo --out runs/ddp
    python -m llmbook.distributed_demo --out runs/single          # the same run in one process

Every rank builds the same small byte-level GPT (dropout 0), joins the process group
(gloo on CPU), and calls the ordinary ``llmbook.train.train``; nothing in this script
is specific to data parallelism except ``setup()`` and ``cleanup()``. Afterwards each
rank saves its own weights to ``OUT/rank<r>.safetensors`` and a JSON summary to
``OUT/rank<r>.json`` (its slice of the first batch, its loss history, its time), and
rank 0's ``train`` writes the checkpoint ``OUT/checkpoint.safetensors``. Comparing the
files shows that the ranks end identical, and identical to the one-process run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from llmbook import distributed
from llmbook.checkpoint import save_model
from llmbook.config import GPTConfig
from llmbook.data import load_corpus
from llmbook.datasets import TokenWindows, split_tokens
from llmbook.device import seed_everything
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.train import PairDataset, TrainConfig, batch_indices, train

MODEL = GPTConfig(vocab_size=257, n_positions=64, n_embd=64, n_layer=2, n_head=4, dropout=0.0,
                  name="ddp-demo")


def token_stream(source: str) -> torch.Tensor:
    """Byte ids of Tiny Shakespeare, or (``synthetic``) a seeded pattern that needs no data files."""
    if source == "synthetic":
        g = torch.Generator().manual_seed(0)
        n = 40_000
        pattern = (torch.arange(n) * 7) % 31 + 65
        noise = torch.randint(0, 257, (n,), generator=g)
        return torch.where(torch.rand(n, generator=g) < 0.1, noise, pattern)
    if source == "shakespeare":
        raw = load_corpus("shakespeare").encode("utf-8")
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    raise ValueError(f"unknown data source {source!r}; choose 'shakespeare' or 'synthetic'")


class MaskedTargets:
    """``dataset`` with every target that is a multiple of 3 set to ``IGNORE_INDEX``."""

    def __init__(self, dataset: PairDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset[i]
        return x, torch.where(y % 3 == 0, IGNORE_INDEX, y)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the weights, checkpoint and summaries")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="global batch, split across the ranks")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--data", default="shakespeare", choices=["shakespeare", "synthetic"])
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--mask-targets", action="store_true",
                   help="ignore the targets that are multiples of 3, so that examples, micro-batches "
                        "and ranks count different numbers of targets")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the demo in this process (one rank of many under torchrun) and return its summary."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = distributed.setup(device=args.device)
    try:
        rank, world = distributed.rank(), distributed.world_size()
        seed_everything(0)
        model = GPT(MODEL).to(device)
        train_ids, val_ids = split_tokens(token_stream(args.data), 0.1)
        train_ds: PairDataset = TokenWindows(train_ids, MODEL.n_positions)
        val_ds: PairDataset = TokenWindows(val_ids, MODEL.n_positions)
        if args.mask_targets:
            train_ds, val_ds = MaskedTargets(train_ds), MaskedTargets(val_ds)
        cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum_steps=args.grad_accum,
                          lr=args.lr, warmup_steps=max(1, args.steps // 10), eval_interval=args.steps,
                          eval_batches=4, precision="fp32", progress=False,
                          checkpoint_path=str(out / "checkpoint.safetensors"))
        first = batch_indices(len(train_ds), args.batch_size, cfg.seed, 0)
        mine = distributed.shard(first, rank, world)
        started = time.process_time()
        history = train(model, train_ds, val_ds, cfg)
        summary = {
            "rank": rank, "world_size": world, "first_batch": first.tolist(), "my_share": mine.tolist(),
            "train_loss": history.train_loss, "val_loss": history.val_loss,
            "tokens_seen": history.tokens_seen, "cpu_seconds": time.process_time() - started,
        }
        save_model(model, out / f"rank{rank}.safetensors")
        (out / f"rank{rank}.json").write_text(json.dumps(summary))
        print(f"rank {rank} of {world}: trained on examples {mine.tolist()} of the first batch "
              f"{first.tolist()}; final loss {history.train_loss[-1]:.4f}", flush=True)
        return summary
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
