"""FinalMLP (Mao et al., "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
AAAI 2023): two MLP streams over differently gated copies of the flat embedding (feature
selection conditioned on context fields), fused by a multi-head bilinear layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.gating import FeatureSelectionGate, MultiHeadBilinearFusion
from adrank.nn.mlp import MLPBlock


@register("finalmlp")
class FinalMLP(CTRModel):
    """logit = Fusion(MLP1(gate1 * e), MLP2(gate2 * e)), e = flatten(E): (B, F * D).

    ``fs1_context`` / ``fs2_context`` name the fields whose embeddings condition each
    stream's gate; empty means a learned context vector (the defaults, since field names
    are dataset-specific; the Frappe config sets ``['user']`` / ``['item']`` as BARS does).
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        mlp1_hidden_units: Sequence[int] = (400,),
        mlp1_hidden_activations: str = "relu",
        mlp1_dropout: float = 0.4,
        mlp1_batch_norm: bool = True,
        mlp2_hidden_units: Sequence[int] = (100,),
        mlp2_hidden_activations: str = "relu",
        mlp2_dropout: float = 0.4,
        mlp2_batch_norm: bool = True,
        use_fs: bool = True,
        fs_hidden_units: Sequence[int] = (400,),
        fs1_context: Sequence[str] = (),
        fs2_context: Sequence[str] = (),
        num_heads: int = 5,
    ) -> None:
        super().__init__(feature_map)
        if not mlp1_hidden_units or not mlp2_hidden_units:
            raise ValueError("FinalMLP needs at least one hidden layer in each stream")
        feature_dim = feature_map.num_fields * embedding_dim
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp1 = MLPBlock(
            feature_dim,
            mlp1_hidden_units,
            mlp1_hidden_activations,
            dropout=mlp1_dropout,
            batch_norm=mlp1_batch_norm,
        )
        self.mlp2 = MLPBlock(
            feature_dim,
            mlp2_hidden_units,
            mlp2_hidden_activations,
            dropout=mlp2_dropout,
            batch_norm=mlp2_batch_norm,
        )
        self.gate1 = self.gate2 = None
        if use_fs:
            self.gate1 = FeatureSelectionGate(
                feature_map, embedding_dim, feature_dim, fs1_context, fs_hidden_units
            )
            self.gate2 = FeatureSelectionGate(
                feature_map, embedding_dim, feature_dim, fs2_context, fs_hidden_units
            )
        self.fusion = MultiHeadBilinearFusion(
            self.mlp1.output_dim, self.mlp2.output_dim, output_dim=1, num_heads=num_heads
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        flat_emb = self.embedding(features).flatten(1)  # (B, F * D)
        x1 = x2 = flat_emb
        if self.gate1 is not None and self.gate2 is not None:
            x1, x2 = self.gate1(features, flat_emb), self.gate2(features, flat_emb)
        return self.fusion(self.mlp1(x1), self.mlp2(x2)).squeeze(-1)
