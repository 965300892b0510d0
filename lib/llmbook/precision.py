"""Mixed precision: which number format a training step computes in, and why (chapter 12).

Every loop of the course trains through one step (``llmbook.train.TrainStep``), and that
step asks this module two things: under which *autocast* to run the forward pass, and
whether the loss needs *scaling* before ``backward()``.

* ``"fp32"``: no autocast; everything in 32-bit floats. The reference.
* ``"bf16"``: autocast to bfloat16. Matrix multiplications run in bf16, the loss and
  the reductions in fp32; weights and optimizer state stay fp32. bf16 keeps fp32's
  8-bit exponent, so gradients do not underflow and no loss scaling is needed.
* ``"fp16"``: autocast to float16, whose 5-bit exponent cannot hold small gradients:
  the loss is multiplied by a large factor before ``backward()`` and the gradients
  divided by it again before the update (a ``GradScaler``; Micikevicius et al., 2018).
* ``"auto"``: what the hardware is good at. On an NVIDIA GPU of compute capability 8.0 or
  newer (A100, RTX 30xx and later, H100) that is bf16. Older GPUs, such as the T4 of
  free Colab (7.5), have no bf16 tensor cores: ``torch.cuda.is_bf16_supported()`` may
  still answer True there, because PyTorch can *emulate* bf16, but emulated bf16 is
  slower than fp32, so ``auto`` picks fp16 with loss scaling on them. On a CPU or an
  Apple GPU ``auto`` is fp32: bf16 pays off only on CPUs with bf16 instructions
  (chapter 12 measures it), so it is something to ask for, not a default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """``precision`` itself, or a ``ValueError`` that lists the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def resolve(device: torch.device | str, precision: str = "auto") -> str:
    """The concrete format ``"fp32"``, ``"bf16"`` or ``"fp16"`` that ``precision`` means on ``device``.

    Only ``"auto"`` depends on the device (see the module docstring); an explicit choice
    is returned as it is, so ``precision="bf16"`` on a T4 still gets (emulated) bf16.
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        return "bf16" if major >= 8 else "fp16"
    return "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 numbers in hardware (AVX-512 BF16 or AMX instructions).

    Without them PyTorch still runs bf16 on the CPU, but by emulation, many times slower
    than fp32. Read from ``/proc/cpuinfo`` on Linux; elsewhere the answer is False.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The dtype autocast computes in for ``precision`` on ``device``, or None for plain fp32."""
    return _DTYPES.get(resolve(device, precision))


@contextlib.contextmanager
def precision_context(device: torch.device | str, precision: str = "auto") -> Iterator[None]:
    """Run the enclosed forward pass in ``precision`` (a no-op for fp32).

    Under autocast, matrix multiplications (the linear layers) run in the reduced format,
    operations that need range or digits (softmax, the loss) in fp32, and the weights and
    the optimizer's update stay fp32 throughout.
    """
    device = torch.device(device)
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device | str, precision: str = "auto") -> torch.amp.GradScaler:
    """A ``GradScaler`` that is enabled exactly when ``precision`` resolves to fp16.

    Disabled, its ``scale``, ``unscale_``, ``step`` and ``update`` pass everything
    through unchanged, so a training step can call them unconditionally.
    """
    device = torch.device(device)
    enabled = resolve(device, precision) == "fp16"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


__all__ = ["PRECISIONS", "autocast_dtype", "check_precision", "cpu_has_bf16", "grad_scaler", "precision_context",
           "resolve"]
