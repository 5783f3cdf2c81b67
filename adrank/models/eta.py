"""ETA (Chen et al., "End-to-End User Behavior Retrieval in Click-Through Rate Prediction
Model", 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.embedding import History
from adrank.nn.simhash import ETA as ETALayer
from adrank.nn.simhash import ETAState


@register("eta")
class ETA(SequenceModel):
    """ETA: behaviours and target get SimHash signatures (``num_bits``); the ``top_k``
    behaviours nearest to the target in Hamming distance are retrieved end to end and
    attended by multi-head target attention (:class:`adrank.nn.simhash.ETA`); an MLP scores
    ``[fields, interest]``.

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> interest (B, A_att) ->
    logit (B,). User side: the behaviours' signatures, once per user (O(L)); per
    candidate O(L) Hamming distances plus O(k) attention.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_bits: int = 32,
        top_k: int = 20,
        num_heads: int = 2,
        attention_dim: int | None = None,
        hash_seed: int = 0,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        self.retrieval = ETALayer(
            self.history_dim, num_bits, top_k, num_heads, attention_dim, seed=hash_seed
        )
        self.build_head(
            self.retrieval.attention.output_dim,
            hidden_units,
            hidden_activations,
            net_dropout,
            batch_norm,
        )

    def encode_history(self, history: History) -> ETAState:
        return self.retrieval.encode_history(history.values, history.mask)

    def attend(self, state: ETAState, target: torch.Tensor) -> torch.Tensor:
        return self.retrieval.attend(state, target)  # (B, K, A_att)
