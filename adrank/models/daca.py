"""DACA: domain-aware cross-attention for cross-domain recommendation (Luo et al.,
"Domain-Aware Cross-Attention for Cross-domain Recommendation", arXiv 2401.11705, 2024;
the paper calls it DACDR).

A user's behaviour history from a data-rich **source** domain is carried to a sparse
**target** domain by two cross-attention steps over that history, at two granularities:

1. **domain level**: the query is the candidate's coarse, domain-level side, its aligned
   attributes (e.g. its genre; the item itself when the history has no attribute), so the
   step picks the source behaviours that transfer to this kind of item;
2. **item level**: the query is the candidate's full embedding together with the
   domain-level interest, refining it item by item.

Both interests, the other fields (the row's domain included, when the schema has one) and
the pooled other sequences feed the DNN head of :class:`~adrank.models.sequence_base.
SequenceModel`. Here the domain-level query is the candidate's attributes rather than the
paper's separate domain features, so the user-once serving API holds unchanged; the
history should hold source-domain behaviours only (``movielens_100k_cross`` builds such
histories).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.target_attention import MultiHeadTargetAttention


@register("daca")
class DACA(SequenceModel):
    """h_d = CA(q = attributes(t), K = V = history); h_i = CA(q = [t, h_d], history);
    logit = MLP([fields, pooled, h_d, h_i]).

    Shapes: history (B, L, D·A) with mask (B, L), target (B, K, D·A) -> interest
    (B, K, 2·D·A) -> logit (B,). User side: the embedded history (both steps need the
    candidate).
    """

    multi_domain = True

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_heads: int = 1,
        attn_dropout: float = 0.0,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        width = self.history_dim
        #: the target's domain-level slice: its attributes after the item itself
        self.coarse_start = embedding_dim if width > embedding_dim else 0
        self.domain_level = MultiHeadTargetAttention(
            width - self.coarse_start, width, width, num_heads, attn_dropout=attn_dropout
        )
        self.item_level = MultiHeadTargetAttention(
            2 * width, width, width, num_heads, attn_dropout=attn_dropout
        )
        self.build_head(2 * width, hidden_units, hidden_activations, net_dropout, batch_norm)

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        values, mask = state  # (B, L, D·A), (B, L)
        coarse = target[..., self.coarse_start :]  # (B, K, D·(A-1)) or (B, K, D·A)
        domain_interest = self.domain_level(coarse, values, mask)  # (B, K, D·A)
        query = torch.cat([target, domain_interest], dim=-1)  # (B, K, 2·D·A)
        item_interest = self.item_level(query, values, mask)  # (B, K, D·A)
        return torch.cat([domain_interest, item_interest], dim=-1)
