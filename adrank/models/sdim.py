"""SDIM (Cao et al., "Sampling Is All You Need on Modeling Long-Term User Behaviors for
CTR Prediction", CIKM 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.embedding import History
from adrank.nn.simhash import SDIM as SDIMLayer
from adrank.nn.simhash import SDIMState


@register("sdim")
class SDIM(SequenceModel):
    """SDIM: behaviours and target are hashed by ``num_hashes`` SimHash signatures of
    ``hash_bits`` bits; per hash the behaviours in the target's bucket are summed and the
    sums averaged over hashes (:class:`adrank.nn.simhash.SDIM`), a locality-sensitive
    approximation of target attention; an MLP scores ``[fields, interest]``.

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> buckets
    (B, m, 2^tau, D·A) -> interest (B, D·A) -> logit (B,). User side: the bucket sums, once
    per user (O(L)); per candidate O(m D), independent of L.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_hashes: int = 16,
        hash_bits: int = 3,
        normalize: bool = False,
        hash_seed: int = 0,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        self.sampling = SDIMLayer(self.history_dim, num_hashes, hash_bits, normalize, hash_seed)
        self.build_head(self.history_dim, hidden_units, hidden_activations, net_dropout, batch_norm)

    def encode_history(self, history: History) -> SDIMState:
        return self.sampling.encode_history(history.values, history.mask)

    def attend(self, state: SDIMState, target: torch.Tensor) -> torch.Tensor:
        return self.sampling.attend(state, target)  # (B, K, D·A)
