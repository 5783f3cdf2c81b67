"""Dropout for adrank's layers: ``torch.nn.functional.dropout`` (``nn.Dropout``) by default.

Commit d50cf18 gave the CPU a faster mask: one ``Tensor.random_()`` int64 per four elements,
an element kept when its 15-bit slice is ``>= round(p * 32768)`` (forward + backward on a
4096 x 400 activation in 8.4 ms against 20.7 ms for ``nn.Dropout``). Issue 19 found DeepFM's
frappe leaderboard AUC lower with it on all three seeds, so it was A/B-tested against
``F.dropout`` (``python -m benchmarks.dropout_ab``; committed config, same seed and thread
count per pair, only the mask differs; kernel - torch):

* DeepFM, 1 thread, seeds 2021-2023: test AUC +0.00053, -0.00097, -0.00058 (mean
  -0.00034 +- 0.00078); test logloss +0.0082, +0.0032, +0.0066 (mean +0.0060 +- 0.0026,
  paired t = 4.0). At 2 threads (issue 19): test AUC -0.00077, -0.00083, -0.00092.
* DCNv2 and FinalNet (completed after the decision): test AUC -0.0010 +- 0.0008 (t = -2.3)
  and +0.00046 +- 0.00020 (t = 4.1), ``benchmarks/results/frappe/dropout_ab.md``.
* Seed noise is large here: after the first step the two runs of a pair share no
  trajectory, so a paired difference has about sqrt(2) x the seed std (DeepFM: ~0.0006 AUC,
  ~0.004 logloss). The thread count alone moves DeepFM seed 2021 (kernel) from 0.985842
  (1 thread) to 0.985081 (2 threads), as much as the kernel was blamed for.
* The kernel's mask showed no flaw (``tests/nn/test_dropout.py`` runs every check on both):
  ``random_()`` fills int64 from two mt19937 outputs modulo 2**63, so bits 0-62 are uniform;
  the keep rate is within binomial error; neighbouring elements, the four positions sharing
  one int64 word (also their 16-pattern joint distribution), rows of a batch and
  successive calls are uncorrelated within 5 standard errors.

No mechanism was found, but the runs could not rule out a cost of the size observed (AUC
lower on 5 of 6 DeepFM pairs, logloss higher on 4 of 4), and speed must not buy accuracy
silently: adrank uses ``F.dropout`` again.

The completed A/B (9 pairs over DeepFM, DCNv2 and FinalNet, 1 thread) found effects of
either sign and none across models: test AUC -0.0003 +- 0.0009, paired t = -1.06
(``benchmarks/results/frappe/dropout_ab.md``). ``F.dropout`` stays the default, because the
published rows re-train bit for bit with it; the kernel is back as an **opt-in** for CPU
training speed, ``train.dropout_kernel: fast`` (:func:`dropout_kernel`), for users who
accept a different random stream (so different, not worse, numbers per seed) for
throughput. On CUDA ``fast`` is ``F.dropout`` (torch's fused kernel).

:class:`Dropout` has no parameters or buffers, so state dicts match ``nn.Dropout``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: ``torch``: ``F.dropout`` everywhere (the default); ``fast``: the sliced-mask kernel on CPU
DROPOUT_KERNELS = ("torch", "fast")
_BITS = 15
_LEVELS = 1 << _BITS
_KERNEL: ContextVar[str] = ContextVar("adrank_dropout_kernel", default="torch")


class _SlicedMaskDropout(torch.autograd.Function):
    """d50cf18's CPU kernel: an element is kept where its 15-bit slice of an int64 random
    word (``Tensor.random_()``, four elements per word) is ``>= round(p * 32768)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        threshold = round(p * _LEVELS)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
        slices = words.view(torch.int16)[:n].bitwise_and_(_LEVELS - 1)
        mask = (slices >= threshold).view(x.shape)
        ctx.save_for_backward(mask)
        ctx.scale = _LEVELS / (_LEVELS - threshold)
        return x * mask * ctx.scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None


def sliced_mask_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """The ``fast`` kernel (CPU; elsewhere, and for ``p`` below 1/65536, ``F.dropout``)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or round(p * _LEVELS) == 0:
        return F.dropout(x, p, training=True)
    return _SlicedMaskDropout.apply(x, p)


@contextlib.contextmanager
def dropout_kernel(name: str) -> Iterator[None]:
    """Within the block, every adrank dropout uses kernel ``name`` (:data:`DROPOUT_KERNELS`).

    The trainer enters it around each training step with ``train.dropout_kernel``; outside
    any block the kernel is ``torch``. Context-local, so threads do not leak it."""
    if name not in DROPOUT_KERNELS:
        raise ValueError(f"dropout kernel must be one of {list(DROPOUT_KERNELS)}, got {name!r}")
    token = _KERNEL.set(name)
    try:
        yield
    finally:
        _KERNEL.reset(token)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p)`` when training with ``p > 0``, else ``x`` itself (``p`` in [0, 1));
    the sliced-mask kernel instead inside ``dropout_kernel("fast")``."""
    if not training or p == 0.0:
        return x
    if _KERNEL.get() == "fast":
        return sliced_mask_dropout(x, p)
    return F.dropout(x, p, training=True)


class Dropout(nn.Module):
    """``nn.Dropout`` through :func:`dropout` (see the module docstring); ``p`` in [0, 1)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
