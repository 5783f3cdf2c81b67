"""TWIN (Chang et al., "TWIN: TWo-stage Interest Network for Lifelong User Behavior
Modeling in CTR Prediction at Kuaishou", KDD 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.embedding import History
from adrank.nn.twin import TWINAttention, TWINState


@register("twin")
class TWIN(SequenceModel):
    """TWIN: one relevance metric for both stages (:class:`adrank.nn.twin.TWINAttention`):
    the general search unit keeps the ``top_k`` behaviours by multi-head target-attention
    score, the exact search unit attends over them with the same scores; an MLP scores
    ``[fields, interest]``. The behaviours' inherent features are their item and aligned
    attributes; these histories carry no user-item cross features (``num_cross`` = 0).

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> interest (B, A_att) ->
    logit (B,). User side: the projected keys and values, once per user (O(L)); per
    candidate O(L) scores plus O(k) attention.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        top_k: int = 20,
        num_heads: int = 2,
        attention_dim: int | None = None,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        attention_dim = attention_dim or self.history_dim
        self.attention = TWINAttention(self.history_dim, top_k, num_heads, attention_dim)
        self.build_head(attention_dim, hidden_units, hidden_activations, net_dropout, batch_norm)

    def encode_history(self, history: History) -> TWINState:
        return self.attention.encode_history(history.values, history.mask)

    def attend(self, state: TWINState, target: torch.Tensor) -> torch.Tensor:
        return self.attention.attend(state, target)  # (B, K, A_att)
