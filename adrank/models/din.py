"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.target_attention import DINAttention


@register("din")
class DIN(SequenceModel):
    """DIN: the local activation unit weighs each behaviour by its relevance to the target,
    ``u = sum_l a(h_l, t) h_l`` (unnormalised, paper eq. 3), and an MLP scores
    ``[fields, u]``.

    Shapes: history (B, L, D·A) with mask (B, L), target (B, D·A) -> interest (B, D·A) ->
    logit (B,). User side: the embedded history itself (the activation unit needs the
    target at every position, so DIN is O(L) per candidate).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        attention_hidden_units: Sequence[int] = (36,),
        attention_activation: str = "dice",
        attention_softmax: bool = False,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        self.attention = DINAttention(
            self.history_dim, attention_hidden_units, attention_activation, attention_softmax
        )
        self.build_head(self.history_dim, hidden_units, hidden_activations, net_dropout, batch_norm)

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        values, mask = state
        return self.attention(target, values, mask)  # (B, K, D·A)
