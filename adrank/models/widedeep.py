"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016):
a wide linear model plus a deep MLP over field embeddings, trained jointly."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import LinearTerm
from adrank.nn.mlp import MLPBlock


@register("widedeep")
class WideDeep(CTRModel):
    """logit = linear(x) + MLP(flatten(E)), E: (B, F, D). Shapes: features -> (B,)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        hidden_activations: str = "relu",
        net_dropout: float = 0.6,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.linear = LinearTerm(feature_map)
        self.dnn = MLPBlock(
            feature_map.num_fields * embedding_dim,
            hidden_units,
            hidden_activations,
            dropout=net_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        return self.linear(features) + self.dnn(emb.flatten(1)).squeeze(-1)
