"""Process-group helpers. Single-process training needs none of this; distributed training
(a later addition) plugs in here so the trainer keeps one place for rank checks."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["is_main_process"]


def is_main_process() -> bool:
    """True on rank 0 or when no process group is initialized: only it writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
