"""FinalNet (Zhu et al., "FINAL: Factorized Interaction Layer for CTR Prediction",
SIGIR 2023): MLP layers replaced by factorized interaction layers. ``2B`` runs two blocks
(the first behind a field gate), averages their logits, and trains each block towards the
ensemble's detached prediction (self-knowledge distillation) via the auxiliary loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, ModelOutput
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.gating import FactorizedInteractionBlock, FieldGate, ResidualType
from adrank.nn.mlp import check_widths


@register("finalnet")
class FinalNet(CTRModel):
    """1B: logit = fc1(Block1(flatten(FieldGate(E)))); 2B: logit = (y1 + y2) / 2 with
    y2 = fc2(Block2(flatten(E))).

    In 2B the auxiliary loss is ``BCE(y1, p) + BCE(y2, p)``, p = sigmoid(logit) detached.
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        block_type: Literal["1B", "2B"] = "2B",
        use_field_gate: bool = True,
        batch_norm: bool = True,
        block1_hidden_units: Sequence[int] = (400, 400),
        block1_hidden_activations: str = "relu",
        block1_dropout: float = 0.1,
        block2_hidden_units: Sequence[int] = (400,),
        block2_hidden_activations: str = "relu",
        block2_dropout: float = 0.1,
        residual_type: ResidualType = "concat",
    ) -> None:
        super().__init__(feature_map)
        if block_type not in ("1B", "2B"):
            raise ValueError(f"block_type must be '1B' or '2B', got {block_type!r}")
        check_widths(block1_hidden_units, "block1_hidden_units")
        if block_type == "2B":
            check_widths(block2_hidden_units, "block2_hidden_units")
        self.block_type = block_type
        num_fields = feature_map.num_fields
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.field_gate = FieldGate(num_fields) if use_field_gate else None
        gated_fields = 2 * num_fields if use_field_gate else num_fields
        self.block1 = FactorizedInteractionBlock(
            gated_fields * embedding_dim,
            block1_hidden_units,
            block1_hidden_activations,
            dropout=block1_dropout,
            batch_norm=batch_norm,
            residual_type=residual_type,
        )
        self.fc1 = nn.Linear(self.block1.output_dim, 1)
        self.block2 = self.fc2 = None
        if block_type == "2B":
            self.block2 = FactorizedInteractionBlock(
                num_fields * embedding_dim,
                block2_hidden_units,
                block2_hidden_activations,
                dropout=block2_dropout,
                batch_norm=batch_norm,
                residual_type=residual_type,
            )
            self.fc2 = nn.Linear(self.block2.output_dim, 1)

    def _block_logits(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        emb = self.embedding(features)  # (B, F, D)
        gated = self.field_gate(emb) if self.field_gate is not None else emb  # (B, 2F|F, D)
        logits = [self.fc1(self.block1(gated.flatten(1))).squeeze(-1)]
        if self.block2 is not None and self.fc2 is not None:
            logits.append(self.fc2(self.block2(emb.flatten(1))).squeeze(-1))
        return logits

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.training_outputs(features).logits

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        logits = self._block_logits(features)
        if len(logits) == 1:
            return ModelOutput(logits[0])
        return ModelOutput(0.5 * (logits[0] + logits[1]), {"y1": logits[0], "y2": logits[1]})

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        if not outputs.aux:
            return None
        target = torch.sigmoid(outputs.logits).detach()
        return F.binary_cross_entropy_with_logits(
            outputs.aux["y1"], target
        ) + F.binary_cross_entropy_with_logits(outputs.aux["y2"], target)
