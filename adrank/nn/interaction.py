"""Feature-interaction layers: linear (LR) term, FM, inner products."""

from __future__ import annotations

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
