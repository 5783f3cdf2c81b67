"""DCN (Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017): a cross
network and an MLP in parallel over the flattened embeddings, concatenated into a linear
output layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.cross import CrossNet
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock


@register("dcn")
class DCN(CTRModel):
    """logit = w^T [CrossNet(x_0); MLP(x_0)] + b, x_0 = flatten(E): (B, F*D).

    With empty ``dnn_hidden_units`` only the cross network feeds the output layer.
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        crossing_layers: int = 3,
        dnn_hidden_units: Sequence[int] = (400, 400, 400),
        dnn_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.num_fields * embedding_dim
        self.crossnet = CrossNet(input_dim, crossing_layers)
        self.dnn = (
            MLPBlock(
                input_dim,
                dnn_hidden_units,
                dnn_activations,
                dropout=net_dropout,
                batch_norm=batch_norm,
            )
            if dnn_hidden_units
            else None
        )
        final_dim = input_dim + (self.dnn.output_dim if self.dnn is not None else 0)
        self.fc = nn.Linear(final_dim, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.embedding(features).flatten(1)  # (B, F*D)
        out = self.crossnet(x0)
        if self.dnn is not None:
            out = torch.cat([out, self.dnn(x0)], dim=-1)
        return self.fc(out).squeeze(-1)
