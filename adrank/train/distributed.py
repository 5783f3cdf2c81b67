"""Process-group helpers for multi-process training on :mod:`torch.distributed`.

Single-process training needs none of this: every helper degrades to the one-process answer
when no process group is initialized, so the trainer keeps one code path.

A worker started by ``torchrun`` or :func:`adrank.train.launch.launch` finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its
environment; :func:`init_distributed` reads them and joins the process group (gloo on CPU,
nccl on CUDA) with a timeout on every collective, so a dead peer ends the job instead of
hanging it.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistributedContext",
    "all_gather_arrays",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "check_timeout_s",
    "env_world_size",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_batch_size",
    "shutdown_distributed",
]

logger = logging.getLogger(__name__)

#: seconds a collective may wait for its peers before it fails (env override: TIMEOUT_ENV)
DEFAULT_TIMEOUT_S = 120.0
TIMEOUT_ENV = "ADRANK_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class DistributedContext:
    """Where this worker sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    timeout_s: float

    def device(self, requested: str) -> str:
        """The device for this worker: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        return f"cuda:{self.local_rank}" if requested == "cuda" else requested


def is_distributed() -> bool:
    """True when a process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 or when no process group is initialized: only it writes files."""
    return get_rank() == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset): > 1 inside a launched worker."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {value!r}") from None


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(
            f"{name} is not set: start distributed workers with `adrank train --nproc N` or "
            "torchrun, which set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        )
    return int(value)


def check_timeout_s(timeout_s: float, source: str = "timeout_s") -> float:
    """``timeout_s`` as a float if it is a finite number of seconds > 0, else ``ValueError``
    naming ``source`` (torch would fail every rendezvous with 0 or less)."""
    value = float(timeout_s)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{source} is the collective timeout and must be a finite number of seconds > 0, "
            f"got {timeout_s!r}"
        )
    return value


def _timeout_s(timeout_s: float | None) -> float:
    if timeout_s is not None:
        return check_timeout_s(timeout_s)
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return check_timeout_s(value, f"${TIMEOUT_ENV}")


def init_distributed(device: str = "cpu", timeout_s: float | None = None) -> DistributedContext:
    """Join the process group described by the environment (idempotent).

    Args:
        device: the training device; ``cuda...`` selects nccl, anything else gloo.
        timeout_s: collective timeout; default ``$ADRANK_DIST_TIMEOUT_S`` or 120 s.

    Sets torch's intra-op threads to ``max(1, cores // LOCAL_WORLD_SIZE)`` so the workers of
    one machine do not oversubscribe its cores (``train.num_threads`` still overrides it).
    """
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    timeout = _timeout_s(timeout_s)
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        threads = max(1, (cores or os.cpu_count() or 1) // max(local_world_size, 1))
        torch.set_num_threads(threads)
        logger.info(
            "rank %d/%d (local %d/%d) joined the %s process group; %d torch threads, "
            "collective timeout %.0fs",
            rank, world_size, local_rank, local_world_size, backend, threads, timeout,
        )  # fmt: skip
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=local_world_size,
        backend=dist.get_backend(),
        timeout_s=timeout,
    )


def shutdown_distributed() -> None:
    """Leave the process group if one is initialized."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    """Rows per rank per step: ``train.batch_size`` is the global batch across all ranks."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if global_batch_size % world_size:
        raise ValueError(
            f"train.batch_size={global_batch_size} is the global batch and must be divisible "
            f"by the number of processes ({world_size}); e.g. use "
            f"{global_batch_size // world_size * world_size or world_size}"
        )
    return global_batch_size // world_size


def barrier(timeout_s: float | None = None) -> None:
    """Wait for every rank (no-op without a process group).

    ``timeout_s`` overrides the collective timeout for a wait known to be long (e.g. while
    rank 0 prepares a dataset); on gloo a late rank is then named in the error.
    """
    if not is_distributed():
        return
    if timeout_s is not None and dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
    else:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_arrays(array: np.ndarray | None) -> np.ndarray | None:
    """Concatenate every rank's rows, in rank order, on every rank.

    Args:
        array: this rank's (N_r, ...) array; ranks may hold different N_r, including 0
            (then pass ``None`` or an empty array: the trailing shape and dtype come from
            the ranks that have rows).

    Returns:
        (sum N_r, ...) on every rank; ``None`` if every rank passed ``None``.

    Each rank pads its rows to the longest shard, one ``all_gather`` moves the padded
    tensors, and the padding is cut off again.
    """
    if not is_distributed():
        return array
    meta = None if array is None else (tuple(array.shape), array.dtype.str)
    metas: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(metas, meta)
    present = [m for m in metas if m is not None]
    if not present:
        return None
    with_rows = [m for m in present if m[0][0] > 0] or present
    trailing, dtype = with_rows[0][0][1:], np.dtype(with_rows[0][1])
    for shape, _ in present:
        if shape[0] > 0 and shape[1:] != trailing:
            raise ValueError(f"cannot gather arrays of shapes {shape} and (N, *{trailing})")
    counts = [0 if m is None else m[0][0] for m in metas]
    longest = max(max(counts), 1)
    local = np.zeros((longest, *trailing), dtype=dtype)
    if array is not None and len(array):
        local[: len(array)] = array
    device = _collective_device()
    # torch has no uint dtypes beyond uint8 on every backend: move raw bytes when needed.
    tensor = torch.from_numpy(local.reshape(longest, -1).view(np.uint8)).to(device)
    gathered = [torch.empty_like(tensor) for _ in counts]
    dist.all_gather(gathered, tensor)
    parts = [
        g.cpu().numpy().view(dtype).reshape(longest, *trailing)[:n]
        for g, n in zip(gathered, counts, strict=True)
    ]
    return np.concatenate(parts)
