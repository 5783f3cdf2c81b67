"""BST (Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in
Alibaba", DLP-KDD 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.behavior_transformer import BehaviorTransformer
from adrank.nn.pooling import pool_sequence


@register("bst")
class BST(SequenceModel):
    """BST: the target is appended to the history and the L + 1 items go through a
    transformer with recency position embeddings (:class:`BehaviorTransformer`); the
    interest is the target's output row concatenated with the mean of the behaviours'
    output rows (FuxiCTR's ``mean`` sequence pooling; the paper concatenates all rows,
    which needs a fixed L), and an MLP scores ``[fields, interest]``.

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> transformer output
    (B, L + 1, D·A) -> interest (B, 2·D·A) -> logit (B,). ``D·A`` must be divisible by
    ``num_heads``. User side: only the embedded history; every candidate needs its own
    sequence through the transformer (O(L^2) per candidate, by design).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_heads: int = 2,
        num_layers: int = 1,
        ffn_dim: int | None = None,
        attention_dropout: float = 0.0,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        max_len = feature_map.field(self.history_field).max_len or 50
        self.transformer = BehaviorTransformer(
            self.history_dim, num_heads, num_layers, ffn_dim, attention_dropout, max_len
        )
        self.build_head(
            2 * self.history_dim, hidden_units, hidden_activations, net_dropout, batch_norm
        )

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        values, mask = state
        out, out_mask = self.transformer(target, values, mask)  # (B, K, L + 1, D·A)
        b, k, n, d = out.shape
        behaviours = pool_sequence(
            out[:, :, :-1].reshape(b * k, n - 1, d), out_mask[:, :, :-1].reshape(b * k, n - 1)
        ).view(b, k, d)
        return torch.cat([out[:, :, -1], behaviours], dim=-1)  # (B, K, 2·D·A)
