"""Shared frame of the user-behaviour sequence models (DIN, DIEN, BST, DMIN, SIM, ETA, SDIM,
TWIN, QIN).

Every such model compares one behaviour history with a target item. The frame does the
rest once, the same way for all of them:

* the history is the first sequence field of the feature map that declares a ``target``
  (``hist_item_id`` -> ``item_id``), with every sequence aligned with it (``hist_genre``)
  concatenated per position: (B, L, D·A), see :meth:`FeatureEmbedding.embed_history`;
* the other fields are embedded one vector each (:meth:`FeatureEmbedding.embed_fields`) and
  any other sequence is mean-pooled (:func:`adrank.nn.pooling.pool_sequence`);
* the model's interest vector (B, W) is concatenated with them and an MLP head (or the
  model's own) gives one logit (B,): single-task, ``outputs = None``, like DNN.

A subclass implements two steps, so a serving request does the user side once:

* :meth:`SequenceModel.encode_history` ``(history) -> state``: the user side, O(L);
* :meth:`SequenceModel.attend` ``(state, target (B, K, D·A)) -> (B, K, W)``: per candidate.

User-once API: :meth:`SequenceModel.encode_user` ``(features of one user) -> UserState``
then :meth:`SequenceModel.score` ``(state, candidate features with K rows) -> logits (K,)``
(or :meth:`SequenceModel.score_candidates` for both); the scores equal ``forward`` on K
rows that repeat the user's features (tested to 1e-6 for every model).

Notation: B batch, L history length, K candidates, D embedding dim, A attributes of the
history (item, genre, ...), W interest width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, ModelOutput
from adrank.nn.augru import interest_auxiliary_loss, sample_negative_positions
from adrank.nn.embedding import FeatureEmbedding, History
from adrank.nn.mlp import MLPBlock
from adrank.nn.pooling import pool_sequence


class UserState(NamedTuple):
    """One request's user side: ``history`` the model's encoded history (for B users),
    ``pooled`` (B, P) the mean-pooled other sequences, ``features`` the users' own
    non-sequence inputs (B,) each (candidates may override them)."""

    history: Any
    pooled: torch.Tensor
    features: dict[str, torch.Tensor]


def history_field(feature_map: FeatureMap, model: str) -> str:
    """The first sequence field that declares a ``target`` (and is not aligned with another
    sequence); a clear error naming what is missing when there is none."""
    sequences = [f for f in feature_map.fields if f.kind == "sequence"]
    for f in sequences:
        if f.target and not f.aligned_with:
            if f.target not in feature_map.names:
                raise ValueError(
                    f"{model}: history {f.name!r} declares target {f.target!r}, which is not a "
                    f"field of the feature map (fields: {feature_map.names})"
                )
            return f.name
    if not sequences:
        raise ValueError(
            f"{model} is a behaviour-sequence model: the feature map has no sequence field "
            f"(fields: {feature_map.names}); declare a history, e.g. SequenceFeature("
            "'hist_item_id', share_vocab_with='item_id', target='item_id')"
        )
    raise ValueError(
        f"{model} needs a history that declares its target item: none of the sequence fields "
        f"{[f.name for f in sequences]} has `target` set (e.g. target='item_id')"
    )


class SequenceModel(CTRModel):
    """Base of the sequence models: history + target -> interest (B, W); interest, the
    other fields and the pooled other sequences -> head -> logit (B,).

    Subclasses call :meth:`__init__` first, then build their layers (using
    :attr:`history_dim`) and finally :meth:`build_head` with their interest width.

    Models with DIEN's next-behaviour auxiliary loss (DIEN, DMIN) set
    :attr:`aux_loss_weight` and return :meth:`next_behaviour_outputs` from
    ``training_outputs``; the base's :meth:`auxiliary_loss` computes it.
    """

    #: weight of the next-behaviour auxiliary loss (0: none)
    aux_loss_weight: float = 0.0

    def __init__(self, feature_map: FeatureMap, embedding_dim: int) -> None:
        super().__init__(feature_map)
        name = getattr(type(self), "registry_name", type(self).__name__)
        self.history_field = history_field(feature_map, name)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        attributes = self.embedding.history_attributes(self.history_field)
        #: D·A, the width of a behaviour (and of its target)
        self.history_dim = embedding_dim * len(attributes)
        self.field_names = [f.name for f in feature_map.fields if f.kind != "sequence"]
        self.pooled_names = [
            f.name for f in feature_map.fields if f.kind == "sequence" and f.name not in attributes
        ]
        self.context_dim = embedding_dim * (len(self.field_names) + len(self.pooled_names))

    def build_head(
        self,
        interest_dim: int,
        hidden_units: Sequence[int],
        hidden_activations: str,
        net_dropout: float,
        batch_norm: bool,
    ) -> None:
        """The DNN-style head: MLP over [fields, pooled sequences, interest] -> 1 logit."""
        self.head: nn.Module = MLPBlock(
            self.context_dim + interest_dim,
            hidden_units,
            hidden_activations,
            dropout=net_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    # -- the two steps a subclass implements ---------------------------------------------
    def encode_history(self, history: History) -> Any:
        """The user side of the history, once per user (O(L)); by default the embedded
        behaviours and their mask, ``(values (B, L, D·A), mask (B, L))``, for models whose
        every step depends on the target (DIN, BST, SIM, QIN)."""
        return history.values, history.mask

    def attend(self, state: Any, target: torch.Tensor) -> torch.Tensor:
        """Interest of each candidate (B, K, D·A) given the encoded history -> (B, K, W)."""
        raise NotImplementedError

    # -- shared plumbing -----------------------------------------------------------------
    def embed_history(self, features: dict[str, torch.Tensor]) -> History:
        return self.embedding.embed_history(features, self.history_field)

    def pooled_sequences(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of each other sequence field (B, D·P); (B, 0) without any."""
        parts = []
        for name in self.pooled_names:
            seq = self.embedding.embed_sequence(features, name)
            parts.append(pool_sequence(seq.values, seq.mask, "mean"))
        if not parts:
            ids = features[self.history_field]
            return self.embedding.fused.weight.new_zeros(ids.shape[0], 0)
        return torch.cat(parts, dim=-1)

    def _head(
        self, features: dict[str, torch.Tensor], pooled: torch.Tensor, interest: torch.Tensor
    ) -> torch.Tensor:
        fields = self.embedding.embed_fields(features, self.field_names)
        x = torch.cat([*fields.values(), pooled, interest], dim=-1)
        return self.head(x).squeeze(-1)

    def logits(self, features: dict[str, torch.Tensor], state: Any) -> torch.Tensor:
        """Logits (B,) of each row's own target against its encoded history ``state``."""
        target = self.embedding.embed_history_target(features, self.history_field)  # (B, DA)
        interest = self.attend(state, target.unsqueeze(1)).squeeze(1)  # (B, W)
        return self._head(features, self.pooled_sequences(features), interest)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(features, self.encode_history(self.embed_history(features)))

    # -- DIEN's next-behaviour auxiliary loss (DIEN, DMIN) -------------------------------
    def cuda_graph_blocker(self) -> str | None:
        if self.aux_loss_weight > 0:
            return (
                f"{type(self).__name__}'s auxiliary loss samples its negatives among the "
                "batch's distinct history items (unique, whose size the host must read); "
                "aux_loss_weight=0 makes the step recordable"
            )
        return super().cuda_graph_blocker()

    def next_behaviour_outputs(
        self,
        logits: torch.Tensor,
        features: dict[str, torch.Tensor],
        history: History,
        states: torch.Tensor,
    ) -> ModelOutput:
        """Logits plus what :meth:`auxiliary_loss` needs: ``states`` (B, L, D·A) (state t
        should score behaviour t + 1 above a negative), the behaviours and in-batch
        negatives from :func:`adrank.nn.augru.sample_negative_positions` (uniform over the
        batch's distinct history items, never an item of the user's own history; taken
        with all aligned attributes). Sampling happens only here, in training."""
        if self.aux_loss_weight == 0:
            return ModelOutput(logits)
        index, valid = sample_negative_positions(features[self.history_field], history.mask)
        aux = {
            "states": states,
            "history": history.values,
            "negatives": history.values.flatten(0, 1)[index],  # (B, L, D·A)
            "mask": history.mask,
            "negative_valid": valid,
        }
        return ModelOutput(logits, aux)

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        """``aux_loss_weight`` x :func:`adrank.nn.augru.interest_auxiliary_loss` of
        :meth:`next_behaviour_outputs`; ``None`` for models without it."""
        if not outputs.aux or "states" not in outputs.aux:
            return None
        a = outputs.aux
        loss = interest_auxiliary_loss(
            a["states"], a["history"], a["negatives"], a["mask"], a["negative_valid"]
        )
        return self.aux_loss_weight * loss

    # -- user-once serving API -----------------------------------------------------------
    def encode_user(self, features: dict[str, torch.Tensor]) -> UserState:
        """The user side of a request: ``features`` hold the history field (B, L) (and its
        aligned attributes, other sequences, user fields) for B users (B = 1 per request)."""
        user = {n: features[n] for n in self.field_names if n in features}
        history = self.encode_history(self.embed_history(features))
        return UserState(history, self.pooled_sequences(features), user)

    def score(self, state: UserState, candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (K,) of K candidates for one user's ``state`` (from :meth:`encode_user` on
        one row). ``candidates`` hold (K,) tensors of the candidate-side fields (at least the
        history's target fields); a field given in both is taken from the candidates."""
        first = next(iter(candidates.values()), None)
        if first is None:
            raise ValueError("score needs at least one candidate field (e.g. the target item)")
        k = first.shape[0]
        if state.pooled.shape[0] != 1:
            raise ValueError(f"score takes one user's state, got {state.pooled.shape[0]} users")
        merged: dict[str, torch.Tensor] = {}
        for name in self.field_names:
            if name in candidates:
                merged[name] = candidates[name]
            elif name in state.features:
                merged[name] = state.features[name].expand(k)
            else:
                raise ValueError(f"field {name!r} is in neither the user's nor the candidates'")
        target = self.embedding.embed_history_target(merged, self.history_field)  # (K, DA)
        interest = self.attend(state.history, target.unsqueeze(0)).squeeze(0)  # (K, W)
        return self._head(merged, state.pooled.expand(k, -1), interest)

    def score_candidates(
        self, user: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`encode_user` on one user's features (1 row) then :meth:`score`: (K,)."""
        return self.score(self.encode_user(user), candidates)
