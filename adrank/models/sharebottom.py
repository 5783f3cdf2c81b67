"""Shared-Bottom multi-task model (Caruana, "Multitask Learning", Machine Learning 1997; the
baseline of MMoE, Ma et al., KDD 2018): one MLP shared by every task, one tower per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.multitask import ConversionTarget, MultiTaskModel, task_outputs
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock
from adrank.nn.towers import TaskTowers


@register("sharebottom")
class ShareBottom(MultiTaskModel):
    """logits[:, k] = tower_k(bottom(flatten(E))), E: (B, F, D). Shapes: features -> (B, K).

    Outputs: the dataset's task outputs in task order (``("pctr", "pcvr")`` on a
    click/conversion dataset, the conversion tower trained on clicked rows);
    ``conversion_target="pctcvr"`` learns conversion on all impressions instead.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        bottom_hidden_units: Sequence[int] = (400, 400),
        tower_hidden_units: Sequence[int] = (128,),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
        conversion_target: ConversionTarget = "pcvr",
    ) -> None:
        super().__init__(feature_map, task_outputs(feature_map, conversion_target, "sharebottom"))
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.bottom = MLPBlock(
            feature_map.num_fields * embedding_dim,
            bottom_hidden_units,
            hidden_activations,
            dropout=net_dropout,
            batch_norm=batch_norm,
        )
        self.towers = TaskTowers(
            self.bottom.output_dim,
            self.num_outputs,
            tower_hidden_units,
            hidden_activations,
            net_dropout,
            batch_norm,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        return self.towers(self.bottom(emb.flatten(1)))  # (B, H) -> (B, K)
