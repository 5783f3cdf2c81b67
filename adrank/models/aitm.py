"""AITM (Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions
with Multi-task Learning in Targeted Display Advertising", KDD 2021): one tower per
conversion step, an Adaptive Information Transfer (AIT) module that passes what the
previous step learned to the next, and a behavioural expectation calibrator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap
from adrank.models.base import ModelOutput
from adrank.models.multitask import MultiTaskModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock, activation
from adrank.nn.towers import TaskTowers


class AdaptiveInformationTransfer(nn.Module):
    """AIT (paper Eq. 2-4): attention over u in {p_{t-1}, q_t}, the information transferred
    from step t - 1 and step t's own tower output:
    ``w_u = softmax_u(<h1(u), h2(u)> / sqrt(H))``, ``z_t = sum_u w_u h3(u)``.

    Shapes: (B, H), (B, H) -> (B, H).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, transferred: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        u = torch.stack([transferred, current], dim=1)  # (B, 2, H)
        scores = (self.query(u) * self.key(u)).sum(-1) * self.scale  # (B, 2)
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # (B, 2, 1)
        return (weights * self.value(u)).sum(1)  # (B, H)


@register("aitm")
class AITM(MultiTaskModel):
    """Steps t = 1 (click), 2 (click and conversion), each learned on all impressions.

    x = flatten(E), E: (B, F, D); q_t = tower_t(x): (B, H); z_1 = q_1;
    z_t = AIT(p_{t-1}, q_t) with p_{t-1} = ReLU(W_{t-1} z_{t-1}) (B, H);
    logit_t = w_t . z_t. Shapes: features -> (B, 2), columns ``("pctr", "pctcvr")``.

    ``auxiliary_loss`` is the behavioural expectation calibrator (paper Eq. 6): a step's
    probability should not exceed the previous step's, so it adds
    ``calibrator_weight * mean(max(p_ctcvr - p_ctr, 0))`` (the paper's alpha = 0.6).
    Needs a click/conversion dataset; pCVR is derived as pCTCVR / pCTR. Default widths are
    the authors' public configuration (towers 128-64-32, AIT width 32).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        tower_hidden_units: Sequence[int] = (128, 64, 32),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
        calibrator_weight: float = 0.6,
    ) -> None:
        super().__init__(feature_map, ("pctr", "pctcvr"))
        if not tower_hidden_units:
            raise ValueError("aitm needs tower_hidden_units (the towers' output is AIT's input)")
        if calibrator_weight < 0:
            raise ValueError(f"calibrator_weight must be >= 0, got {calibrator_weight}")
        self.calibrator_weight = calibrator_weight
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        steps = self.num_outputs
        self.towers = nn.ModuleList(
            MLPBlock(
                feature_map.num_fields * embedding_dim,
                tower_hidden_units,
                hidden_activations,
                dropout=net_dropout,
                batch_norm=batch_norm,
            )
            for _ in range(steps)
        )
        width = int(tower_hidden_units[-1])
        self.transfer = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), activation("relu")) for _ in range(steps - 1)
        )
        self.ait = nn.ModuleList(AdaptiveInformationTransfer(width) for _ in range(steps - 1))
        self.heads = TaskTowers(width, steps)  # one linear logit per step

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(features).flatten(1)  # (B, F * D)
        z = [self.towers[0](x)]  # z_1 = q_1: (B, H)
        for t in range(1, len(self.towers)):
            transferred = self.transfer[t - 1](z[-1])  # p_{t-1}: (B, H)
            z.append(self.ait[t - 1](transferred, self.towers[t](x)))
        return self.heads(z)  # (B, steps)

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        if self.calibrator_weight == 0:
            return None
        p = torch.sigmoid(outputs.logits.float())  # (B, steps)
        excess = torch.relu(p[:, 1:] - p[:, :-1]).sum(dim=1)  # (B,)
        return self.calibrator_weight * excess.mean()
