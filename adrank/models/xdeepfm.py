"""xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for
Recommender Systems", KDD 2018): linear term + Compressed Interaction Network + MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.cin import CIN
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import LinearTerm
from adrank.nn.mlp import MLPBlock


@register("xdeepfm")
class XDeepFM(CTRModel):
    """logit = linear(x) + w^T CIN(E) + b + MLP(flatten(E)), E: (B, F, D).

    With empty ``dnn_hidden_units`` the MLP is dropped. Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        cin_layer_units: Sequence[int] = (64,),
        dnn_hidden_units: Sequence[int] = (400, 400, 400),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.linear = LinearTerm(feature_map, use_bias=False)  # the CIN head carries the bias
        self.cin = CIN(feature_map.num_fields, cin_layer_units)
        self.cin_fc = nn.Linear(self.cin.output_dim, 1)
        self.dnn = (
            MLPBlock(
                feature_map.num_fields * embedding_dim,
                dnn_hidden_units,
                hidden_activations,
                dropout=net_dropout,
                batch_norm=batch_norm,
                output_dim=1,
            )
            if dnn_hidden_units
            else None
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        logit = self.linear(features) + self.cin_fc(self.cin(emb)).squeeze(-1)
        if self.dnn is not None:
            logit = logit + self.dnn(emb.flatten(1)).squeeze(-1)
        return logit
