"""Data-parallel training across processes with ``torch.distributed`` (chapter 12).

Data parallelism runs one copy of the model per process (per GPU, or per CPU process
with the ``gloo`` backend). Every process ("rank") takes its own slice of each global
batch, computes gradients on it, and the ranks average their gradients with an
*all-reduce* before the optimizer step. Because every rank starts from the same weights
and applies the same averaged gradient, the copies stay identical, and the run computes
what one process would compute on the whole batch, only faster.

``llmbook.train.train`` uses the helpers here: when a process group is initialised
with more than one rank, it wraps the model in ``DistributedDataParallel``, gives each
rank ``shard(batch, rank, world_size)`` of every batch, averages the logged loss, and
lets rank 0 alone print progress and write checkpoints. Without a process group every
helper answers as a single process would (rank 0 of 1), so the same script runs with
``python script.py`` and with ``torchrun --nproc_per_node=2 script.py``.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from llmbook.device import best_device

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True when a process group with more than one rank is running (under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's number among the ranks, 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many processes train together, 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that prints, logs and saves files."""
    return rank() == 0


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of a global batch of dataset indices.

    The batch is cut into ``world_size`` equal, consecutive pieces: rank 0 takes the first,
    rank 1 the second, and so on, so the pieces put back in rank order are the batch. The
    pieces must be equal because every rank averages its loss over its own examples and
    the all-reduce then averages the ranks: a mean of equal-sized means is the mean of
    the whole batch, a mean of unequal ones is not.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) and world_size positive, got rank={rank}, "
                         f"world_size={world_size}")
    n = len(indices)
    if n % world_size:
        below, above = n - n % world_size, n + world_size - n % world_size
        suggestion = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"a global batch of {n} examples cannot be split evenly across {world_size} processes; "
            f"choose a batch_size that is a multiple of the number of processes (e.g. {suggestion})"
        )
    per_rank = n // world_size
    return indices[rank * per_rank : (rank + 1) * per_rank]


def mean_across_ranks(value: float) -> float:
    """The average of ``value`` over all ranks (every rank gets it); ``value`` itself alone."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.item() / dist.get_world_size()


def sum_across_ranks(*values: float) -> tuple[float, ...]:
    """Element-wise sums of ``values`` over all ranks (every rank gets them)."""
    if not is_distributed():
        return tuple(float(v) for v in values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tuple(t.tolist())


def barrier() -> None:
    """Wait until every rank gets here (e.g. until rank 0 has written a file); no-op alone."""
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves tensors that live on the GPU; gloo works on CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True when the environment carries the variables ``torchrun`` sets for each process."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def setup(backend: str | None = None, device: str | torch.device | None = None) -> torch.device:
    """Join the process group that ``torchrun`` prepared, and return this rank's device.

    ``backend`` defaults to NCCL when the device is a GPU and gloo otherwise (gloo runs on
    CPUs, which is how a laptop can try data parallelism). Each GPU rank uses the GPU
    numbered by its ``LOCAL_RANK``. Run without ``torchrun`` it initialises nothing and
    returns ``device`` (or the best device), so one script serves both cases.
    """
    device = torch.device(device) if device is not None else best_device()
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return device


def cleanup() -> None:
    """Leave the process group (call once at the end of a distributed script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on this machine that nothing listens on now (for ``--master_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(module: str, args: Sequence[str] = (), nproc: int = 2, port: int | None = None) -> list[str]:
    """The command line that starts ``python -m module args`` on ``nproc`` local processes.

    It calls torchrun as ``python -m torch.distributed.run`` with the running interpreter,
    so it works in any virtual environment or notebook kernel without ``torchrun`` on the
    PATH. Pass it to ``subprocess.run``; set ``OMP_NUM_THREADS`` in its environment so the
    processes do not fight over the cores.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    port = port or free_port()
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={port}", "-m", module, *args]
