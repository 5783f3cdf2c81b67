"""DIEN (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction",
AAAI 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import ModelOutput
from adrank.models.registry import register
from adrank.models.sequence_base import SequenceModel
from adrank.nn.augru import AUGRU, InterestExtractor
from adrank.nn.embedding import History


@register("dien")
class DIEN(SequenceModel):
    """DIEN: a GRU extracts an interest state per behaviour (B, L, D·A), an AUGRU evolves
    them under the target's attention into one interest (B, H), and an MLP scores
    ``[fields, evolved interest]``.

    Auxiliary loss (paper eq. 2, weight ``aux_loss_weight``): each interest state ``h_t``
    should score the next behaviour ``e_{t+1}`` above a negative ``e^_{t+1}``
    (:func:`adrank.nn.augru.interest_auxiliary_loss`). **Negatives** are sampled in-batch by
    :func:`adrank.nn.augru.sample_negative_positions`: uniformly over the distinct items of
    the batch's histories, excluding every item of that user's own history (redrawn up to 4
    times; a position still colliding is left out of the loss), and taken with their
    aligned attributes (item and genre); the paper samples from items not clicked at that
    step. Sampling happens only in training (:meth:`training_outputs`); ``forward`` is
    deterministic, so the model exports.

    Shapes: history (B, L, D·A), mask (B, L), target (B, D·A) -> logit (B,). User side: the
    interest states (once per user); the AUGRU runs per candidate (O(L) each).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        gru_hidden_dim: int | None = None,
        aux_loss_weight: float = 1.0,
        hidden_units: Sequence[int] = (200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, embedding_dim)
        if aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be >= 0, got {aux_loss_weight}")
        self.aux_loss_weight = aux_loss_weight
        # the auxiliary loss takes <h_t, e_{t+1}>: interests as wide as a behaviour
        self.extractor = InterestExtractor(self.history_dim, self.history_dim)
        hidden = gru_hidden_dim or self.history_dim
        self.evolution = AUGRU(self.history_dim, self.history_dim, hidden)
        self.build_head(hidden, hidden_units, hidden_activations, net_dropout, batch_norm)

    def encode_history(self, history: History) -> tuple[torch.Tensor, torch.Tensor]:
        return self.extractor(history.values, history.mask), history.mask  # (B, L, D·A)

    def attend(
        self, state: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        interests, mask = state
        return self.evolution(target, interests, mask)  # (B, K, H)

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        history = self.embed_history(features)
        state = self.encode_history(history)
        return self.next_behaviour_outputs(
            self.logits(features, state), features, history, state[0]
        )
