"""QIN (Li et al., "Quadratic Interest Network for Multimodal Click-Through Rate
Prediction", 2nd place of the WWW 2025 EReL@MIR multimodal CTR prediction challenge;
reference code github.com/salmon1802/QIN)."""

from __future__ import annotations

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.qin import AdaptiveSparseTargetAttention, QuadraticNetwork


@register("qin")
class QIN(SequenceModel):
    """QIN: adaptive sparse target attention (ReLU weights, so irrelevant behaviours get
    exactly zero weight) pools the history into an interest (B, D·A), and the quadratic
    neural network (``num_layers`` Khatri-Rao quadratic layers with residuals) maps
    ``[fields, interest]`` to the logit, in place of an MLP.

    The multimodal part of the challenge model (frozen item vectors from text/images)
    enters as ordinary fields of the feature map; nothing here is modality-specific.

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> interest (B, D·A) ->
    logit (B,). User side: the embedded history; per candidate O(L).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        attention_dim: int | None = None,
        num_heads: int = 1,
        num_layers: int = 3,
        num_row: int = 2,
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        self.attention = AdaptiveSparseTargetAttention(
            self.history_dim, attention_dim, num_heads=num_heads
        )
        self.head = QuadraticNetwork(
            self.context_dim + self.history_dim,
            num_layers,
            num_row,
            dropout=net_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        values, mask = state
        return self.attention(target, values, mask)  # (B, K, D·A)
