"""Where the model runs: device choice, seeding and mixed precision (chapter 1, chapter 12).

The same notebook runs on a laptop CPU, an Apple GPU and a Colab GPU, so nothing in
the course hard-codes a device: it asks ``best_device()``.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def best_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU. ``LLMBOOK_DEVICE`` overrides."""
    forced = os.environ.get("LLMBOOK_DEVICE")
    if forced:
        try:
            return torch.device(forced)
        except RuntimeError as err:
            raise ValueError(f"LLMBOOK_DEVICE={forced!r} is not a torch device (try cpu, cuda, mps)") from err
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a torch Generator with that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision worth using on this device, or None for plain fp32.

    bf16 keeps fp32's exponent range, so it needs no loss scaling; we use it on GPUs
    that support it. On CPUs bf16 matmuls are often slower than fp32 unless the chip
    has bf16 instructions, so the CPU default stays fp32 (chapter 12 measures this).
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None = None):
    """A context manager for mixed precision, a no-op where ``dtype`` resolves to None."""
    device = torch.device(device)
    dtype = dtype if dtype is not None else autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
