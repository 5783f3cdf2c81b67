"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI 2017): linear + FM + DNN over shared field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import FMInteraction, LinearTerm
from adrank.nn.mlp import MLPBlock


@register("deepfm")
class DeepFM(CTRModel):
    """logit = linear(x) + FM(E) + MLP(flatten(E)), E: (B, F, D). Shapes: features -> (B,)."""

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.linear = LinearTerm(feature_map)
        self.fm = FMInteraction()
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
        logit = self.linear(features) + self.fm(emb)
        return logit + self.dnn(emb.flatten(1)).squeeze(-1)
