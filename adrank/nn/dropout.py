"""Dropout for adrank's layers: ``torch.nn.functional.dropout`` (``nn.Dropout``) on every device.

Commit d50cf18 gave the CPU a faster mask: one ``Tensor.random_()`` int64 per four elements,
an element kept when its 15-bit slice is ``>= round(p * 32768)`` (forward + backward on a
4096 x 400 activation in 8.4 ms against 20.7 ms for ``nn.Dropout``). Issue 19 found DeepFM's
frappe leaderboard AUC lower with it on all three seeds, so it was A/B-tested against
``F.dropout`` (``python -m benchmarks.dropout_ab``; committed config, same seed and thread
count per pair, only the mask differs; kernel - torch):

* DeepFM, 1 thread, seeds 2021-2023: test AUC +0.00053, -0.00097, -0.00058 (mean
  -0.00034 +- 0.00078); test logloss +0.0082, +0.0032, +0.0066 (mean +0.0060 +- 0.0026,
  paired t = 4.0). At 2 threads (issue 19): test AUC -0.00077, -0.00083, -0.00092.
* DCNv2 and FinalNet: see ``benchmarks/results/frappe/dropout_ab.md`` (the A/B was not
  finished when this was decided; it resumes where it stopped).
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
silently: adrank uses ``F.dropout`` again. The kernel stays in ``benchmarks/dropout_ab.py``
so the A/B can be completed; it can come back if the completed A/B shows no cost.

:class:`Dropout` has no parameters or buffers, so state dicts match ``nn.Dropout``'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p)`` when training with ``p > 0``, else ``x`` itself (``p`` in [0, 1))."""
    if not training or p == 0.0:
        return x
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
