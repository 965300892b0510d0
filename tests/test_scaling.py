"""``llmbook.scaling``: the compute, memory and time arithmetic of chapter 12."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmbook import GPT, GPTConfig, count_parameters
from llmbook.scaling import (
    GPU_PEAK_BF16_FLOPS,
    activation_bytes,
    chinchilla_tokens,
    compute_optimal,
    interleaved_timings,
    measure_throughput,
    model_state_bytes,
    per_gpu_state_bytes,
    training_flops,
    training_seconds,
)


@pytest.mark.parametrize("attn_impl", ["explicit", "sdpa"])
def test_six_n_d_predicts_the_flops_of_a_real_training_step(attn_impl):
    # PyTorch counts the multiply-adds of one forward and backward pass; 6 N D should match
    # them (within the attention scores' share, small at a short context).
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, n_positions=16, n_embd=128, n_layer=2, n_head=4, attn_impl=attn_impl))
    x = torch.randint(0, 256, (4, 16))
    with FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    predicted = training_flops(model.num_parameters(), x.numel())
    assert counter.get_total_flops() == pytest.approx(predicted, rel=0.05)
    with pytest.raises(ValueError, match="positive"):
        training_flops(0, 10)


def test_six_n_d_matches_gpt3s_published_training_compute():
    # GPT-3 175B on 300B tokens: 3.14e23 FLOPs (Brown et al., 2020, Table D.1).
    assert training_flops(count_parameters("gpt3-175b"), 300e9) == pytest.approx(3.14e23, rel=0.01)


@pytest.mark.parametrize("params,flops,tokens", [
    # Hoffmann et al. (2022), Table 3: compute-optimal model sizes, budgets and token counts.
    (400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (1e12, 1.27e26, 21.2e12),
])
def test_compute_optimal_matches_chinchillas_table(params, flops, tokens):
    n, d = compute_optimal(flops)
    # The table's token counts run from 20 to 22 per parameter; the rule of thumb says 20.
    assert n == pytest.approx(params, rel=0.05) and d == pytest.approx(tokens, rel=0.12)
    assert chinchilla_tokens(params) == pytest.approx(tokens, rel=0.12)


def test_training_time_divides_by_devices_and_utilisation():
    flops = training_flops(124e6, 2.5e9)
    one = training_seconds(flops, GPU_PEAK_BF16_FLOPS["A100"], mfu=0.4)
    assert one == pytest.approx(1.86e18 / (312e12 * 0.4))
    assert training_seconds(flops, GPU_PEAK_BF16_FLOPS["A100"], n_devices=8, mfu=0.4) == pytest.approx(one / 8)
    with pytest.raises(ValueError, match="mfu"):
        training_seconds(flops, 1e12, mfu=40)


def test_adam_needs_sixteen_bytes_per_parameter_either_way():
    for precision in ("fp32", "mixed"):
        assert sum(model_state_bytes(1, precision).values()) == 16
    with pytest.raises(ValueError, match="precision"):
        model_state_bytes(1, "fp8")


def test_zero_stages_shard_more_and_more():
    n = count_parameters("gpt2-xl")
    totals = [sum(per_gpu_state_bytes(n, 8, stage).values()) for stage in range(4)]
    assert totals[0] == 16 * n  # plain DDP: everything on every GPU
    assert totals[1] == pytest.approx((2 + 2 + 12 / 8) * n)
    assert totals[2] == pytest.approx((2 + (2 + 12) / 8) * n)
    assert totals[3] == pytest.approx(16 * n / 8)
    assert all(a > b for a, b in itertools.pairwise(totals))
    with pytest.raises(ValueError, match="stage"):
        per_gpu_state_bytes(n, 8, 4)


def test_fused_attention_drops_the_quadratic_term():
    cfg = GPTConfig.from_preset("gpt2")
    fused, explicit = activation_bytes(cfg, 1), activation_bytes(cfg, 1, fused_attention=False)
    assert explicit - fused == pytest.approx(cfg.n_layer * 5 * cfg.n_head * 1024**2)
    assert activation_bytes(cfg, 4) == pytest.approx(4 * fused)  # linear in the batch


def test_interleaved_timings_take_turns():
    order = []
    times = interleaved_timings({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4 and all(len(v) == 3 and min(v) >= 0 for v in times.values())


def test_measured_throughput_is_consistent():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    t = measure_throughput(model, batch_size=2, seq_len=16, steps=2)
    assert t.tokens_per_second == pytest.approx(32 / t.seconds_per_step)
    assert t.flops_per_second == pytest.approx(6 * model.num_parameters() * t.tokens_per_second)
    assert all(p.grad is None for p in model.parameters())


def test_peak_memory_counts_what_a_call_allocates_at_its_peak():
    from llmbook.scaling import peak_memory

    mib = 2**20

    def two_buffers_at_once() -> None:
        a = torch.empty(mib, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2 * mib, dtype=torch.uint8)  # 2 MiB more while a lives
        del a, b

    def one_after_the_other() -> None:
        for n in (mib, 2 * mib):
            torch.empty(n, dtype=torch.uint8)  # each freed before the next

    assert 3 * mib <= peak_memory(two_buffers_at_once) < 3.2 * mib
    assert 2 * mib <= peak_memory(one_after_the_other) < 2.2 * mib
    assert peak_memory(lambda: None) == 0


def test_peak_memory_gives_stderr_back(capfd):
    import os

    from llmbook.scaling import peak_memory

    peak_memory(lambda: torch.ones(10))
    os.write(2, b"still here\n")
    assert "still here" in capfd.readouterr().err
