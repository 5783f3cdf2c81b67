"""Feature-interaction layers: linear (LR) term, FM, pairwise inner and element-wise products."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.nn.embedding import FeatureEmbedding


class LinearTerm(nn.Module):
    """First-order term: a scalar weight per categorical id / per numeric field, plus bias.

    Shapes: features -> (B,).
    """

    def __init__(self, feature_map: FeatureMap, use_bias: bool = True) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(feature_map, embedding_dim=1, init_std=1e-4)
        self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.weights(features).sum(dim=(1, 2))  # (B, F, 1) -> (B,)
        return out + self.bias if self.bias is not None else out


class FMInteraction(nn.Module):
    """Second-order FM term: 0.5 * ((sum_f e_f)^2 - sum_f e_f^2) summed over D.

    Shapes: (B, F, D) -> (B,) or, with ``reduce_sum=False``, (B, D) (the bi-interaction
    pooling of NFM).
    """

    def __init__(self, reduce_sum: bool = True) -> None:
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = emb.pow(2).sum(dim=1)  # (B, D)
        out = 0.5 * (square_of_sum - sum_of_square)
        return out.sum(dim=1) if self.reduce_sum else out


def require_pairs(model: str, fields: Sequence[str], what: str = "field pairs") -> None:
    """ValueError naming ``model`` unless it has at least 2 ``fields``: a model built on
    interactions of field pairs has no pair with one field (and failed with a shape error
    otherwise)."""
    if len(fields) < 2:
        raise ValueError(
            f"{model} needs at least 2 fields ({what}), got {len(fields)}: {list(fields)}"
        )


def pair_indices(num_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the F(F-1)/2 field pairs (i < j), in row-major order.

    Pair ``p`` is ``(rows[p], cols[p])``: (0, 1), (0, 2), ..., (0, F-1), (1, 2), ...
    """
    if num_fields < 2:
        raise ValueError(f"pairwise interactions need at least 2 fields, got {num_fields}")
    rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
    return rows, cols


class InnerProductInteraction(nn.Module):
    """Pairwise inner products ``<e_i, e_j>`` for every field pair i < j (IPNN, DLRM "dot").

    Shapes: (B, F, D) -> (B, F(F-1)/2), pairs ordered as in :func:`pair_indices`.
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = pair_indices(num_fields)
        self.num_fields = num_fields
        self.num_pairs = int(rows.numel())
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(emb, emb.transpose(1, 2))  # (B, F, F)
        return gram[:, self.rows, self.cols]  # (B, P)


class PairwiseProduct(nn.Module):
    """Element-wise products ``e_i * e_j`` for every field pair i < j (AFM/FiBiNET style).

    Shapes: (B, F, D) -> (B, F(F-1)/2, D), pairs ordered as in :func:`pair_indices`.
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        rows, cols = pair_indices(num_fields)
        self.num_fields = num_fields
        self.num_pairs = int(rows.numel())
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb[:, self.rows] * emb[:, self.cols]  # (B, P, D)
