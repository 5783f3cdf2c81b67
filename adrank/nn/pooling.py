"""Padding-aware pooling of sequences and the masked softmax every attention layer uses.

Notation: B batch, L sequence length, D width. ``mask`` is (B, L) bool with ``True`` for a
real item and ``False`` for padding (id 0). Padding never contributes: an all-padding row
(a user's first interaction) pools to zeros for every mode.
"""

from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["mean", "sum", "max"]
POOLING_MODES: tuple[str, ...] = ("mean", "sum", "max")


def pool_sequence(values: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool (B, L, D) ``values`` over the real positions of ``mask`` (B, L) -> (B, D).

    ``mean`` divides the masked sum by the number of real items (at least 1), ``sum`` is the
    masked sum, ``max`` the element-wise maximum over real items. Rows without a real item
    give zeros in every mode.
    """
    if mode not in POOLING_MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; expected one of {POOLING_MODES}")
    if mode == "max":
        neg = torch.finfo(values.dtype).min
        pooled = values.masked_fill(~mask.unsqueeze(-1), neg).amax(dim=1)
        return pooled.masked_fill(~mask.any(dim=1, keepdim=True), 0.0)
    weights = mask.unsqueeze(-1).to(values.dtype)  # (B, L, 1)
    # Multiplying (not ``where``) keeps the history-free models' mean pooling bit-identical
    # to what FeatureEmbedding always computed; any finite padded value times 0 is 0.
    total = (values * weights).sum(1)
    if mode == "sum":
        return total
    return total / weights.sum(1).clamp_min(1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over the ``True`` entries of ``mask`` (broadcastable to
    ``scores``); masked entries get weight exactly 0, and a row with no ``True`` entry gets
    all-zero weights (not NaN), so attending over an empty history returns zeros.

    Shapes: any; ``mask`` broadcasts to ``scores``.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(filled, dim=dim)
    # For an all-masked row softmax is uniform over padding: zero it.
    return weights.masked_fill(~mask, 0.0)


def mask_padding(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero (B, L, D) ``values`` at padded positions of ``mask`` (B, L), exactly (a fill,
    not a product, so even a non-finite padded value becomes 0)."""
    return values.masked_fill(~mask.unsqueeze(-1), 0.0)


def as_candidates(target: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A target (B, D) or K candidates per row (B, K, D) as (B, K, D), and whether the
    input was (B, D) (so the layer squeezes K = 1 back out of its output)."""
    if target.dim() == 2:
        return target.unsqueeze(1), True
    if target.dim() == 3:
        return target, False
    raise ValueError(f"target must be (B, D) or (B, K, D), got shape {tuple(target.shape)}")


def check_history(history: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise a clear error unless ``history`` is (B, L, D) and ``mask`` (B, L) bool."""
    if history.dim() != 3:
        raise ValueError(f"history must be (B, L, D), got shape {tuple(history.shape)}")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(history.shape[:2]):
        raise ValueError(
            f"mask must be bool {tuple(history.shape[:2])} (True = real item), got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )


def select_top_k(
    scores: torch.Tensor, mask: torch.Tensor, k: int, largest: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` best real positions per row, for the retrieval stage of
    long-sequence models (SIM, ETA, TWIN).

    Padding is ranked after every real position, so it is picked only when a row has fewer
    than ``k`` real items, and then it comes back marked ``False`` in the returned mask.
    ``k`` larger than L is clipped to L.

    Shapes: scores (..., L), mask broadcastable to (..., L) -> index (..., k) long and
    mask (..., k) bool.
    """
    mask = mask.expand_as(scores)
    k = min(k, scores.shape[-1])
    worst = torch.finfo(scores.dtype).min if largest else torch.finfo(scores.dtype).max
    filled = scores.masked_fill(~mask, worst)
    index = filled.topk(k, dim=-1, largest=largest, sorted=True).indices
    return index, mask.gather(-1, index)


def gather_positions(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather history vectors (B, L, D) at per-candidate positions ``index`` (B, K, k) ->
    (B, K, k, D)."""
    b, k, n = index.shape
    flat = index.reshape(b, k * n, 1).expand(-1, -1, values.shape[-1])
    return values.gather(1, flat).view(b, k, n, values.shape[-1])


def recency_positions(mask: torch.Tensor) -> torch.Tensor:
    """Recency rank of each position of (B, L) ``mask``: 1 for the last real item, 2 for the
    one before, ...; 0 at padding. Shapes: (B, L) bool -> (B, L) long."""
    later_or_here = mask.flip(-1).long().cumsum(-1).flip(-1)  # real items at or after j
    return later_or_here.masked_fill(~mask, 0)
