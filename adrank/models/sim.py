"""SIM with soft search (Pi et al., "Search-based User Interest Modeling with Lifelong
Sequential Behavior Data for Click-Through Rate Prediction", CIKM 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.pooling import gather_positions, select_top_k
from adrank.nn.target_attention import MultiHeadTargetAttention


@register("sim")
class SIM(SequenceModel):
    """SIM (soft search): the general search unit keeps, per candidate, the ``top_k``
    behaviours with the largest inner product ``<t, h_l>`` with the target (paper eq. 1,
    with the model's own embeddings rather than separately pre-trained ones); the exact
    search unit is multi-head target attention over those behaviours; an MLP scores
    ``[fields, interest]``. (The paper's short-term part and time-gap embeddings are left
    out: the histories here are short and carry no timestamps.)

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> retrieved (B, k, D·A) ->
    interest (B, A_att) -> logit (B,). User side: the embedded history; per candidate
    O(L) search plus O(k) attention.
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
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.attention = MultiHeadTargetAttention(
            self.history_dim, self.history_dim, attention_dim, num_heads=num_heads
        )
        self.build_head(
            self.attention.output_dim, hidden_units, hidden_activations, net_dropout, batch_norm
        )

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        values, mask = state
        relevance = target @ values.transpose(1, 2)  # (B, K, L): soft search
        index, found = select_top_k(relevance, mask.unsqueeze(1), self.top_k)
        retrieved = gather_positions(values, index)  # (B, K, k, D·A)
        return self.attention(target, retrieved, found)  # (B, K, A_att)
