"""The runtime profile, ``cpu`` or ``gpu``: how big every chapter's experiments are.

Each chapter sizes its models and budgets with ``pick(cpu=..., gpu=...)``. The ``cpu``
profile keeps every chapter within two minutes on a two-core laptop; the ``gpu``
profile spends a free Colab GPU's budget on better results. The profile follows the
hardware unless ``LLMBOOK_PROFILE`` says otherwise.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

PROFILES = ("cpu", "gpu")
T = TypeVar("T")


def current_profile() -> str:
    """``LLMBOOK_PROFILE`` if set, else ``gpu`` when CUDA is available, else ``cpu``."""
    forced = os.environ.get("LLMBOOK_PROFILE", "").strip().lower()
    if forced:
        if forced not in PROFILES:
            raise ValueError(
                f"LLMBOOK_PROFILE={forced!r} is not a profile; set it to one of {PROFILES} or unset it"
            )
        return forced
    return "gpu" if torch.cuda.is_available() else "cpu"


def pick(cpu: T, gpu: T) -> T:
    """The value for the current profile, e.g. ``steps = pick(cpu=300, gpu=5000)``."""
    return gpu if current_profile() == "gpu" else cpu
