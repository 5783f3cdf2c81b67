"""IPNN (Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016):
pairwise inner products of field embeddings, concatenated with the embeddings, into an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import InnerProductInteraction, require_pairs
from adrank.nn.mlp import MLPBlock


@register("ipnn")
class IPNN(CTRModel):
    """logit = MLP([flatten(E); <e_i, e_j>_{i<j}]), E: (B, F, D); MLP input F*D + F(F-1)/2.

    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        hidden_activations: str = "relu",
        net_dropout: float = 0.3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(feature_map)
        require_pairs("ipnn", feature_map.names, "inner products of field pairs")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.inner_product = InnerProductInteraction(feature_map.num_fields)
        self.dnn = MLPBlock(
            feature_map.num_fields * embedding_dim + self.inner_product.num_pairs,
            hidden_units,
            hidden_activations,
            dropout=net_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        x = torch.cat([emb.flatten(1), self.inner_product(emb)], dim=-1)  # (B, F*D + P)
        return self.dnn(x).squeeze(-1)
