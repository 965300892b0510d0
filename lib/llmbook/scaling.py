"""The arithmetic of scaling up: compute, memory and time for training a GPT (chapter 12).

Three rules of thumb carry most of the planning of a training run:

* **Compute.** Training costs about ``6 * N * D`` floating-point operations for ``N``
  parameters and ``D`` tokens: 2 per parameter per token for the forward pass (a multiply
  and an add) and about twice that for the backward pass (Kaplan et al., 2020).
* **Data.** For a fixed compute budget the loss is lowest with about 20 tokens per
  parameter (Hoffmann et al., 2022, "Chinchilla").
* **Memory.** Adam training keeps, per parameter, the weight, its gradient and two
  moment estimates: 16 bytes in fp32, and also 16 bytes in mixed precision (2 + 2 for
  the 16-bit weight and gradient, 12 for the fp32 master weight and moments), as the
  ZeRO paper counts them (Rajbhandari et al., 2020). ZeRO stages 1, 2 and 3 (and
  PyTorch's FSDP, Zhao et al., 2023) shard the optimizer states, then the gradients,
  then the weights across the GPUs.

The functions here compute these quantities from a parameter count, so the chapter can
set GPT-2 and GPT-3 side by side without building either, and ``measure_throughput``
times a few real training steps to turn FLOPs into hours. ``peak_memory`` measures what
one call allocates (chapter 5 weighs attention with it).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from llmbook.config import GPTConfig
from llmbook.model import GPT
from llmbook.precision import precision_context

# Bytes per parameter of the model states that Adam training keeps (ZeRO paper, section 3.1).
BYTES_PER_PARAMETER: dict[str, dict[str, int]] = {
    "fp32": {"weights": 4, "gradients": 4, "optimizer": 8},  # Adam's two moments in fp32
    "mixed": {"weights": 2, "gradients": 2, "optimizer": 12},  # + an fp32 master copy of the weights
}

ZERO_STAGES: dict[int, str] = {
    0: "DDP (every GPU holds everything)",
    1: "ZeRO-1 (optimizer states sharded)",
    2: "ZeRO-2 (+ gradients sharded)",
    3: "ZeRO-3 / FSDP (+ weights sharded)",
}

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets: A100 SXM 312
# TFLOPS (NVIDIA A100 Tensor Core GPU datasheet), H100 SXM 989 TFLOPS (NVIDIA H100
# Tensor Core GPU datasheet). Real training reaches a fraction of the peak: the
# model FLOPs utilisation (MFU), about 40-50% for well-tuned large runs (PaLM reports
# 46.2%, Chowdhery et al., 2022).
GPU_PEAK_BF16_FLOPS: dict[str, float] = {"A100": 312e12, "H100": 989e12}

TOKENS_PER_PARAMETER = 20  # Chinchilla's compute-optimal ratio (Hoffmann et al., 2022)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def training_flops(n_params: float, n_tokens: float) -> float:
    """About ``6 * N * D``: the floating-point operations to train N parameters on D tokens."""
    _positive("n_params", n_params)
    _positive("n_tokens", n_tokens)
    return 6.0 * n_params * n_tokens


def chinchilla_tokens(n_params: float, tokens_per_parameter: float = TOKENS_PER_PARAMETER) -> float:
    """The compute-optimal number of training tokens for a model of ``n_params`` (about 20 N)."""
    _positive("n_params", n_params)
    return tokens_per_parameter * n_params


def compute_optimal(flops: float, tokens_per_parameter: float = TOKENS_PER_PARAMETER) -> tuple[float, float]:
    """The (parameters, tokens) that spend ``flops`` best: C = 6 N D with D = 20 N.

    Solving gives N = sqrt(C / (6 * 20)) and D = 20 N, so a 10x bigger budget buys a
    ~3.2x bigger model trained on ~3.2x more tokens.
    """
    _positive("flops", flops)
    n = (flops / (6.0 * tokens_per_parameter)) ** 0.5
    return n, tokens_per_parameter * n


def training_seconds(flops: float, flops_per_second: float, n_devices: int = 1, mfu: float = 1.0) -> float:
    """Wall-clock seconds to do ``flops`` on ``n_devices`` that each reach ``mfu`` of ``flops_per_second``."""
    _positive("flops_per_second", flops_per_second)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu is a fraction of the peak, in (0, 1]; got {mfu}")
    return flops / (flops_per_second * mfu * n_devices)


def model_state_bytes(n_params: float, precision: str = "mixed") -> dict[str, float]:
    """Bytes of weights, gradients and Adam's optimizer states (``fp32`` or ``mixed``)."""
    if precision not in BYTES_PER_PARAMETER:
        raise ValueError(f"precision must be one of {sorted(BYTES_PER_PARAMETER)}, got {precision!r}")
    return {part: n_params * b for part, b in BYTES_PER_PARAMETER[precision].items()}


def per_gpu_state_bytes(n_params: float, n_gpus: int, stage: int, precision: str = "mixed") -> dict[str, float]:
    """The model-state bytes each GPU holds under ZeRO stage 0 (plain DDP), 1, 2 or 3 (FSDP).

    Stage 1 divides the optimizer states among the ``n_gpus``, stage 2 also the
    gradients, stage 3 also the weights. Activations are not model states: every GPU
    keeps those of its own micro-batch under every stage (see ``activation_bytes``).
    """
    if stage not in ZERO_STAGES:
        raise ValueError(f"stage must be one of {sorted(ZERO_STAGES)} (0 = plain DDP), got {stage!r}")
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be at least 1, got {n_gpus}")
    states = model_state_bytes(n_params, precision)
    sharded = ["optimizer", "gradients", "weights"][:stage]
    return {part: b / n_gpus if part in sharded else b for part, b in states.items()}


def activation_bytes(config: GPTConfig, batch_size: int, seq_len: int | None = None,
                     fused_attention: bool = True) -> float:
    """Rough bytes of activations kept for the backward pass, in 16-bit mixed precision.

    Per layer, Korthikanti et al. (2022, "Reducing activation recomputation in large
    transformer models") count ``s*b*h*(34 + 5*a*s/h)`` bytes for sequence length s,
    batch b, width h and a heads. The ``5*a*s/h`` part is the s-by-s attention matrices;
    a fused attention kernel (FlashAttention, PyTorch's ``scaled_dot_product_attention``)
    never stores them, so ``fused_attention=True`` leaves it out. The output logits add
    ``s*b*vocab`` numbers in fp32 (the loss is computed in fp32). No recomputation is
    assumed; activation checkpointing would trade most of this for extra compute.
    """
    s = seq_len or config.n_positions
    b, h, a = batch_size, config.n_embd, config.n_head
    per_layer = s * b * h * (34 + (0 if fused_attention else 5 * a * s / h))
    return config.n_layer * per_layer + 4 * s * b * config.vocab_size


def clock(device: torch.device | str = "cpu") -> Callable[[], float]:
    """The timer for measuring work on ``device``.

    On a GPU: wall-clock time, after waiting for the GPU to finish (its work runs
    asynchronously). On a CPU: this process's CPU time. On a shared machine the wall
    clock also counts the time other people's programs held the core; CPU time counts
    only ours, and with one thread it equals the wall time an idle machine would show.
    """
    device = torch.device(device)
    if device.type == "cuda":
        def cuda_time() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return cuda_time
    return time.process_time


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send the process's stderr (file descriptor 2) to /dev/null for a moment.

    PyTorch's profiler writes a few log lines from C++ on every run, below Python's
    ``sys.stderr``, so only swapping the descriptor itself keeps a page clean.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes PyTorch allocates while ``fn()`` runs, above what was allocated before.

    On a GPU the allocator keeps the statistic (``torch.cuda.max_memory_allocated``). On a
    CPU nothing does, so the profiler records every allocation (+) and free (-) of
    PyTorch's allocator and we add them up in order. Tools that watch Python's own
    allocations, like ``tracemalloc``, do not see tensors at all.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with _quiet_stderr(), torch.autograd.profiler.profile(profile_memory=True) as prof:
        fn()
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def interleaved_timings(variants: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, taking turns (A, B, A, B, ...), after ``warmup`` rounds.

    Taking turns spreads any slow spell of a busy machine over all variants instead of
    letting it land on one; report the median of each list, which ignores the odd outlier.
    """
    now = clock(device)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = now()
            fn()
            times[name].append(now() - start)
    return times


@dataclass
class Throughput:
    """Training speed measured on real steps, and what it means in FLOPs."""

    tokens_per_second: float
    seconds_per_step: float
    flops_per_second: float  # 6 * N * tokens/s: the model FLOPs the step did per second
    n_params: int
    batch_size: int
    seq_len: int


def measure_throughput(model: GPT, batch_size: int, seq_len: int, steps: int = 2, warmup: int = 1,
                       precision: str = "fp32") -> Throughput:
    """Time ``steps`` forward + backward passes of ``model`` on random tokens (after ``warmup``).

    The optimizer step is left out: it is a few operations per parameter, negligible
    beside the 6 per parameter per token of the passes. Uses ``clock`` (CPU time on a CPU).
    """
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
    y = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)

    def step() -> None:
        with precision_context(device, precision):
            _, loss = model(x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    was_training = model.training
    model.train()
    try:
        times = interleaved_timings({"step": step}, repeats=steps, warmup=warmup, device=device)["step"]
    finally:
        model.train(was_training)
    per_step = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_second = batch_size * seq_len / per_step
    return Throughput(tokens_per_second, per_step, 6.0 * n_params * tokens_per_second, n_params, batch_size, seq_len)
