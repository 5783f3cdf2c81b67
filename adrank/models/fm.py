"""FM (Rendle, "Factorization Machines", ICDM 2010): linear term + pairwise factorized
interactions."""

from __future__ import annotations

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import FMInteraction, LinearTerm


@register("fm")
class FM(CTRModel):
    """logit = b + sum_f w_f + sum_{i<j} <e_i, e_j>, E: (B, F, D). Shapes: features -> (B,)."""

    def __init__(self, feature_map: FeatureMap, embedding_dim: int = 10) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.linear = LinearTerm(feature_map)
        self.fm = FMInteraction()

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(features) + self.fm(self.embedding(features))
