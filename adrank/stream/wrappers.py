"""Training wrappers for update strategies: a model plus what it is updated against.

:class:`UpdateWrapper` is a :class:`~adrank.models.base.CTRModel` around the model being
updated (its trainable parameters are the model's), so the one Trainer trains it with the
model's optimizer. It can add

* a **feature prior** (``data_driven_prior``'s FP): a fixed logit offset per row from
  smoothed click rates of each field's value over all chunks so far,
  ``offset = mean_f [logit(c_f(v)) - logit(p0)]`` with ``c_f(v) = (clicks + a p0) /
  (impressions + a)``, ``p0`` the global rate and ``a`` the prior strength;
* the **previous model** (frozen, eval mode), whose logits go to the loss as ``aux``:
  ``prior_weight * BCE(p_new, p_previous)`` (``data_driven_prior``'s MP: the previous
  model's predictive distribution as the prior of the update), and/or
  ``ranking_weight * softplus(-(2y - 1) (z_new - z_previous))`` (confidence ranking: the
  new model is pushed to be more confident in the observed label than the previous one,
  a logistic surrogate of ranking the two models per row).

These follow the papers' descriptions ("An Incremental Update Framework for Online
Recommenders with Data-Driven Prior", CIKM 2023; "Confidence Ranking for CTR Prediction",
2023); the exact losses are our reading of them and are documented as such.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from adrank.data.batches import Batch, TensorData
from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, ModelOutput

__all__ = ["FeaturePrior", "UpdateWrapper", "frozen_copy"]


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` (the previous model of an update)."""
    previous = copy.deepcopy(model)
    for p in previous.parameters():
        p.requires_grad_(False)
    return previous.eval()


class FeaturePrior:
    """Click and impression counts per (categorical field, id) over the stream so far.

    Args:
        strength: ``a``, the pseudo-impressions of the global rate in every estimate.
    """

    def __init__(self, strength: float = 20.0) -> None:
        self.strength = strength
        self.clicks: dict[str, np.ndarray] = {}
        self.shows: dict[str, np.ndarray] = {}
        self.total = np.zeros(2)  # clicks, impressions

    def add(
        self, data: TensorData, feature_map: FeatureMap, label: int, rows: int | None = None
    ) -> None:
        """Count ``data`` (its first ``rows`` rows; label column ``label``) into the tables."""
        batch = data.data
        y = batch.labels[:rows, label].double().numpy()
        self.total += (y.sum(), len(y))
        for f in feature_map.of_kind("categorical"):
            ids = batch.features[f.name][:rows].numpy()
            size = max(int(ids.max()) + 1, len(self.shows.get(f.name, ())))
            for table in (self.clicks, self.shows):
                old = table.get(f.name, np.zeros(0))
                table[f.name] = np.pad(old, (0, size - len(old)))
            self.clicks[f.name] += np.bincount(ids, weights=y, minlength=size)
            self.shows[f.name] += np.bincount(ids, minlength=size)

    def offsets(self, rows: dict[str, int]) -> dict[str, torch.Tensor]:
        """Per field, the logit offset of every id (tables of ``rows[field]`` rows)."""
        p0 = (self.total[0] + 1) / (self.total[1] + 2)
        base = math.log(p0 / (1 - p0))
        out = {}
        for name, shows in self.shows.items():
            n = rows.get(name, len(shows))
            clicks = np.pad(self.clicks[name], (0, max(0, n - len(shows))))[:n]
            shows = np.pad(shows, (0, max(0, n - len(shows))))[:n]
            rate = (clicks + self.strength * p0) / (shows + self.strength)
            out[name] = torch.as_tensor(np.log(rate / (1 - rate)) - base, dtype=torch.float32)
        return out


class UpdateWrapper(CTRModel):
    """``model`` + optional feature-prior offsets + optional previous model (see the module
    docstring). Shapes: features -> (B,) logits, like the model."""

    def __init__(
        self,
        model: CTRModel,
        previous: nn.Module | None = None,
        offsets: dict[str, torch.Tensor] | None = None,
        prior_weight: float = 0.0,
        ranking_weight: float = 0.0,
    ) -> None:
        super().__init__(model.feature_map)
        self.model = model
        self.previous = previous
        self.prior_weight = prior_weight
        self.ranking_weight = ranking_weight
        self.offset_fields = sorted(offsets or {})
        for name in self.offset_fields:
            self.register_buffer(f"offset_{name}", offsets[name], persistent=False)  # type: ignore[index]

    def train(self, mode: bool = True) -> UpdateWrapper:
        super().train(mode)
        if self.previous is not None:
            self.previous.eval()  # the prior never trains (no dropout, frozen batch norm)
        return self

    def prior_logit(self, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.offset_fields:
            return None
        parts = []
        for name in self.offset_fields:
            table = getattr(self, f"offset_{name}")
            ids = features[name].clamp(max=len(table) - 1)
            parts.append(table[ids])
        return torch.stack(parts, dim=1).mean(dim=1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(features)
        prior = self.prior_logit(features)
        return logits if prior is None else logits + prior

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        logits = self(features)
        aux = {}
        if self.previous is not None:
            with torch.no_grad():
                previous = self.previous(features)
                prior = self.prior_logit(features)
                aux["previous"] = previous if prior is None else previous + prior
        return ModelOutput(logits, aux)

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        if "previous" not in outputs.aux:
            return None
        new, old = outputs.logits, outputs.aux["previous"]
        loss = new.new_zeros(())
        if self.prior_weight > 0:
            loss = loss + self.prior_weight * F.binary_cross_entropy_with_logits(
                new, torch.sigmoid(old)
            )
        if self.ranking_weight > 0:
            sign = 2 * labels.float() - 1
            loss = loss + self.ranking_weight * F.softplus(-sign * (new - old)).mean()
        return loss
