"""Data-parallel training (``llmbook.distributed`` and ``train`` under torchrun): two CPU
processes on the gloo backend end with the same weights as one process trained on the
combined batches, and with the same weights as each other."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from llmbook import distributed
from llmbook.distributed_demo import main as demo_main
from llmbook.train import batch_indices

DEMO_ARGS = ["--data", "synthetic", "--steps", "8", "--batch-size", "8", "--grad-accum", "2"]


def test_shards_are_equal_disjoint_and_put_back_the_batch():
    batch = batch_indices(100, 12, seed=3, first_sample=40)
    for world in (1, 2, 3, 4, 6, 12):
        pieces = [distributed.shard(batch, r, world) for r in range(world)]
        assert all(len(p) == 12 // world for p in pieces)
        assert torch.equal(torch.cat(pieces), batch)


def test_uneven_shards_are_refused_with_a_suggestion():
    with pytest.raises(ValueError, match=r"multiple of the number of processes.*8 or 12"):
        distributed.shard(torch.arange(10), 0, 4)
    with pytest.raises(ValueError, match="rank"):
        distributed.shard(torch.arange(8), 2, 2)


def test_without_a_process_group_everything_is_one_process():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    assert distributed.mean_across_ranks(2.5) == 2.5 and distributed.sum_across_ranks(1, 2) == (1.0, 2.0)
    distributed.barrier()  # a no-op, not a hang
    cmd = distributed.torchrun_command("llmbook.distributed_demo", ["--out", "x"], nproc=3, port=1234)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nnodes=1"]
    assert "--nproc_per_node=3" in cmd and "--master_port=1234" in cmd and cmd[-3:] == ["llmbook.distributed_demo",
                                                                                         "--out", "x"]


@pytest.mark.parametrize("masked", [False, True], ids=["all-targets", "masked-targets"])
def test_two_processes_end_with_the_weights_of_one(tmp_path, masked):
    # Masked: the ranks and micro-batches count different numbers of targets, so only a
    # loss summed over tokens and divided by the global count gives one process's result.
    args = [*DEMO_ARGS, "--mask-targets"] if masked else DEMO_ARGS
    single = demo_main(["--out", str(tmp_path / "one"), *args])
    assert single["world_size"] == 1

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = distributed.torchrun_command("llmbook.distributed_demo", ["--out", str(tmp_path / "two"), *args])
    run = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"torchrun failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    one = load_file(tmp_path / "one" / "rank0.safetensors")
    rank0 = load_file(tmp_path / "two" / "rank0.safetensors")
    rank1 = load_file(tmp_path / "two" / "rank1.safetensors")
    assert one.keys() == rank0.keys() == rank1.keys()
    for name in one:
        torch.testing.assert_close(rank0[name], rank1[name], atol=0, rtol=0, msg=f"ranks differ in {name}")
        torch.testing.assert_close(rank0[name], one[name], atol=1e-5, rtol=1e-4,
                                   msg=f"two processes and one process differ in {name}")
    # rank 0 alone wrote the training checkpoint, and it holds the same weights.
    ckpt = load_file(tmp_path / "two" / "checkpoint.safetensors")
    for name, value in rank0.items():
        torch.testing.assert_close(ckpt[name], value, atol=0, rtol=0)

    summaries = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    first = single["first_batch"]
    assert [s["world_size"] for s in summaries] == [2, 2]
    assert summaries[0]["my_share"] + summaries[1]["my_share"] == first  # the union is the batch
    assert summaries[0]["train_loss"] == summaries[1]["train_loss"]  # the logged loss is averaged
    assert summaries[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
    assert summaries[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert summaries[0]["tokens_seen"] == single["tokens_seen"]
