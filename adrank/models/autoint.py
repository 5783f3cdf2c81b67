"""AutoInt (Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive
Neural Networks", CIKM 2019): stacked multi-head self-attention over field embeddings, then a
linear output layer. Optional DNN tower (that is AutoInt+, registered separately) and wide
(LR) term, as in FuxiCTR."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.attention import MultiHeadSelfAttention
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import LinearTerm
from adrank.nn.mlp import MLPBlock


@register("autoint")
class AutoInt(CTRModel):
    """logit = w^T flatten(SelfAttn^L(E)) [+ MLP(flatten(E))] [+ linear(x)], E: (B, F, D).

    ``attention_dim`` is the total width of each attention layer's output (split over
    ``num_heads``); ``net_dropout`` applies to the attention weights and the DNN.
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        attention_layers: int = 6,
        num_heads: int = 4,
        attention_dim: int = 128,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
        dnn_hidden_units: Sequence[int] = (),
        dnn_activations: str = "relu",
        net_dropout: float = 0.0,
        batch_norm: bool = False,
        use_wide: bool = False,
    ) -> None:
        super().__init__(feature_map)
        if attention_layers < 1:
            raise ValueError(f"attention_layers must be >= 1, got {attention_layers}")
        num_fields = feature_map.num_fields
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.attention = nn.Sequential(
            *[
                MultiHeadSelfAttention(
                    embedding_dim if i == 0 else attention_dim,
                    attention_dim,
                    num_heads=num_heads,
                    dropout=net_dropout,
                    use_residual=use_residual,
                    use_scale=use_scale,
                    layer_norm=layer_norm,
                )
                for i in range(attention_layers)
            ]
        )
        self.output = nn.Linear(num_fields * attention_dim, 1)
        self.dnn = (
            MLPBlock(
                num_fields * embedding_dim,
                dnn_hidden_units,
                dnn_activations,
                dropout=net_dropout,
                batch_norm=batch_norm,
                output_dim=1,
            )
            if dnn_hidden_units
            else None
        )
        self.linear = LinearTerm(feature_map, use_bias=False) if use_wide else None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        attended = self.attention(emb)  # (B, F, attention_dim)
        logit = self.output(attended.flatten(1)).squeeze(-1)
        if self.dnn is not None:
            logit = logit + self.dnn(emb.flatten(1)).squeeze(-1)
        if self.linear is not None:
            logit = logit + self.linear(features)
        return logit
