"""Atomic checkpoints and RNG-state capture for exact resume.

Checkpoints contain only tensors and plain Python values so they load with
``torch.load(weights_only=True)``: the NumPy RNG state is stored as a tensor.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adrank.utils import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "state_dict_copy",
]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read (truncated, empty, not a checkpoint) or does not belong
    to the run that tries to resume from it."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically (temp file + rename)."""
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain values only).

    A file that does not load (truncated by a full disk or a killed copy, empty, not a
    torch file) raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises OSError, EOFError, KeyError, RuntimeError, ...
        raise CheckpointError(
            f"{path} cannot be read: it is truncated or not a checkpoint ({_reason(exc)})"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint")
    return payload


def _reason(exc: BaseException) -> str:
    """The first line of ``exc`` (torch's load errors run to several sentences)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no data"
    return f"{type(exc).__name__}: {text[:160]}"


def state_dict_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def capture_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy, torch CPU and (if initialized) CUDA."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    # weights_only loading turns tuples into lists; random.setstate needs tuples.
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
