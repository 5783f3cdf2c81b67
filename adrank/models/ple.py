"""PLE (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations", RecSys 2020): stacked Customized Gate Control (CGC)
levels of task-specific and shared experts, then task towers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.multitask import ConversionTarget, MultiTaskModel, task_outputs
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.experts import CGCLayer
from adrank.nn.towers import TaskTowers


@register("ple")
class PLE(MultiTaskModel):
    """Progressive extraction over ``num_levels`` CGC levels, then one tower per task.

    Level j (:class:`~adrank.nn.experts.CGCLayer`) keeps K + 1 streams: task k's experts
    and gate read task k's output of level j - 1, the shared experts and the shared gate
    read the shared output of level j - 1 (level 1: all read x = flatten(E), E: (B, F, D)).

    * Task k's gate mixes task k's experts and the shared experts (paper Eq. 3).
    * The shared gate (every level but the last, whose shared output nothing reads) mixes
      **all** experts of the level: every task's and the shared ones. This follows the paper,
      Sec. 4.3: "Besides gates for task-specific experts, the extraction network also
      employs a gating network for shared experts to combine knowledge from all experts in
      this layer" and "the selected matrix of the shared module in PLE is slightly different
      from task-specific modules, as it consists of all shared experts and task-specific
      experts in this layer" (also drawn in its Fig. 5). It is how the shared stream of the
      next level learns from the task-specific experts, the "progressive" separation the
      paper argues for. Public implementations differ here: FuxiCTR's shared gate mixes
      only the shared experts; torch-rechub's, like this one and the paper, mixes all.

    Shapes: features -> (B, K). Outputs: the dataset's task outputs in task order
    (``("pctr", "pcvr")`` on a click/conversion dataset, the conversion tower trained on
    clicked rows); ``conversion_target="pctcvr"`` learns conversion on all impressions.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_levels: int = 2,
        num_specific_experts: int = 1,
        num_shared_experts: int = 2,
        expert_hidden_units: Sequence[int] = (256, 128),
        tower_hidden_units: Sequence[int] = (64,),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
        conversion_target: ConversionTarget = "pcvr",
    ) -> None:
        super().__init__(feature_map, task_outputs(feature_map, conversion_target, "ple"))
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        width = feature_map.num_fields * embedding_dim
        levels = []
        for level in range(num_levels):
            cgc = CGCLayer(
                width,
                self.num_outputs,
                num_specific_experts,
                num_shared_experts,
                expert_hidden_units,
                hidden_activations,
                net_dropout,
                batch_norm,
                shared_gate=level < num_levels - 1,
            )
            levels.append(cgc)
            width = cgc.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = TaskTowers(
            width, self.num_outputs, tower_hidden_units, hidden_activations, net_dropout, batch_norm
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(features).flatten(1)  # (B, F * D)
        streams = [x] * (self.num_outputs + 1)  # K task streams + the shared stream
        for level in self.levels:
            streams = level(streams)  # K (+1) x (B, H)
        return self.towers(streams[: self.num_outputs])  # (B, K)
