"""FiBiNET (Huang et al., "FiBiNET: Combining Feature Importance and Bilinear feature
Interaction for Click-Through Rate Prediction", RecSys 2019): SENET re-weights the field
embeddings; bilinear interactions of the original and re-weighted embeddings feed a DNN;
plus a linear term."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.gating import BilinearInteraction, BilinearType, SqueezeExcitation
from adrank.nn.interaction import LinearTerm, require_pairs
from adrank.nn.mlp import MLPBlock


@register("fibinet")
class FiBiNET(CTRModel):
    """logit = linear(x) + MLP([Bilinear(E), Bilinear'(SENET(E))]), E: (B, F, D).

    ``shared_bilinear=True`` uses one bilinear layer for both inputs (FuxiCTR v1, the code
    behind the BARS Frappe_x1 result); ``False`` uses two (FuxiCTR v2, DeepCTR).
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        hidden_activations: str = "relu",
        excitation_activation: str = "relu",
        reduction_ratio: float = 2.0,
        bilinear_type: BilinearType = "field_all",
        shared_bilinear: bool = True,
        net_dropout: float = 0.3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        require_pairs("fibinet", feature_map.names, "bilinear interactions of field pairs")
        num_fields = feature_map.num_fields
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.senet = SqueezeExcitation(num_fields, reduction_ratio, excitation_activation)
        self.bilinear = BilinearInteraction(num_fields, embedding_dim, bilinear_type)
        self.senet_bilinear = (
            None
            if shared_bilinear
            else BilinearInteraction(num_fields, embedding_dim, bilinear_type)
        )
        self.linear = LinearTerm(feature_map, use_bias=False)
        self.dnn = MLPBlock(
            num_fields * (num_fields - 1) * embedding_dim,  # two sets of F(F-1)/2 pairs
            hidden_units,
            hidden_activations,
            dropout=net_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        p = self.bilinear(emb)  # (B, P, D)
        second = self.bilinear if self.senet_bilinear is None else self.senet_bilinear
        q = second(self.senet(emb))  # (B, P, D)
        dnn_in = torch.cat([p, q], dim=1).flatten(1)  # (B, 2 * P * D)
        return self.linear(features) + self.dnn(dnn_in).squeeze(-1)
