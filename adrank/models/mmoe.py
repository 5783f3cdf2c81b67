"""MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018): shared experts, one softmax gate per task, task towers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.multitask import ConversionTarget, MultiTaskModel, task_outputs
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.experts import ExpertBank, SoftmaxGate
from adrank.nn.towers import TaskTowers


@register("mmoe")
class MMoE(MultiTaskModel):
    """x = flatten(E), E: (B, F, D); S = experts(x): (B, num_experts, H);
    f_k = softmax(W_k x) . S: (B, H); logits[:, k] = tower_k(f_k). Shapes: features -> (B, K).

    Outputs: the dataset's task outputs in task order (``("pctr", "pcvr")`` on a
    click/conversion dataset, the conversion tower trained on clicked rows);
    ``conversion_target="pctcvr"`` learns conversion on all impressions instead.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_experts: int = 4,
        expert_hidden_units: Sequence[int] = (256, 128),
        tower_hidden_units: Sequence[int] = (64,),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
        conversion_target: ConversionTarget = "pcvr",
    ) -> None:
        super().__init__(feature_map, task_outputs(feature_map, conversion_target, "mmoe"))
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.num_fields * embedding_dim
        self.experts = ExpertBank(
            input_dim, num_experts, expert_hidden_units, hidden_activations, net_dropout, batch_norm
        )
        self.gates = nn.ModuleList(
            SoftmaxGate(input_dim, num_experts) for _ in range(self.num_outputs)
        )
        self.towers = TaskTowers(
            self.experts.output_dim,
            self.num_outputs,
            tower_hidden_units,
            hidden_activations,
            net_dropout,
            batch_norm,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(features).flatten(1)  # (B, F * D)
        experts = self.experts(x)  # (B, num_experts, H)
        return self.towers([gate(x, experts) for gate in self.gates])  # K x (B, H) -> (B, K)
