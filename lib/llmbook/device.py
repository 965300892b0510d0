"""Where the model runs: device choice and seeding (chapter 1); precision is ``llmbook.precision``.

The same notebook runs on a laptop CPU, an Apple GPU and a Colab GPU, so nothing in
the course hard-codes a device: it asks ``best_device()``.
"""

from __future__ import annotations

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
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the global RNG that learners' np.random calls use
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
