"""Ensemble strategies: the drift-aware ensemble and AdaMoE.

* ``drift_ensemble`` ("Always Strengthen Your Strengths: A Drift-Aware Incremental
  Learning Framework for CTR Prediction", SIGIR 2023), as we read it: up to
  ``max_members`` models. When chunk t arrives every member's logloss on it is measured
  before training (the error signal). An :class:`ErrorDriftDetector` on the best member's
  error flags a drift when it exceeds the mean of the errors since the last drift by
  ``threshold`` standard deviations (after ``min_history`` chunks). Members within
  ``tolerance`` (relative) of the best error match the data and are strengthened (trained
  on chunk t); the others are frozen. On a drift a new member is trained from scratch on
  chunk t, replacing the worst member when the ensemble is full. Predictions average the
  members' probabilities with weights ``softmax(-(error - best) / temperature)`` from their
  logloss on the update's holdout.
* ``adamoe`` ("On the Adaptation to Concept Drift for CTR Prediction", 2022), as we read
  it: ``experts`` models all updated on every chunk, expert k with learning rate
  ``lr * lr_ratio**k`` (fast to slow adaptation); the mixture weights are a statistical
  policy, ``softmax(-(ema - best) / temperature)`` of an exponential moving average
  (``decay``) of each expert's logloss on each new chunk before it trains on it.

Both cost about their number of trained members times fine-tuning.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, ClassVar

import numpy as np

from adrank.data.batches import TensorData
from adrank.stream.growing import GrowingModel
from adrank.stream.protocol import StreamContext, UpdateStats, update_stats
from adrank.stream.strategies import Strategy, register_strategy
from adrank.train.evaluation import Predictions

__all__ = ["AdaMoE", "DriftEnsemble", "ErrorDriftDetector"]


class ErrorDriftDetector:
    """Flags a drift when an error exceeds ``mean + threshold * std`` of the errors seen
    since the last drift (at least ``min_history`` of them); the history restarts after a
    drift. Feed one error per step with :meth:`update`."""

    def __init__(self, threshold: float = 2.0, min_history: int = 3) -> None:
        self.threshold = threshold
        self.min_history = min_history
        self.history: list[float] = []

    def update(self, error: float) -> bool:
        history = self.history
        drift = False
        if len(history) >= self.min_history:
            spread = statistics.pstdev(history)
            drift = error > statistics.fmean(history) + self.threshold * max(spread, 1e-4)
        self.history = [error] if drift else [*history, error]
        return drift


def _softmax_weights(errors: np.ndarray, temperature: float) -> np.ndarray:
    scores = -(errors - errors.min()) / temperature
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


class _Ensemble(Strategy):
    scores_as_saved = False  # predictions combine members; a run holds the newest
    members: list[GrowingModel]
    weights: np.ndarray

    def predict(self, ctx: StreamContext, data: TensorData) -> Predictions:
        parts = [ctx.predict(m.model, data) for m in self.members]
        probs = sum(w * p.probs for w, p in zip(self.weights, parts, strict=True))
        return dataclasses.replace(parts[0], probs=np.asarray(probs, dtype=parts[0].probs.dtype))

    def current(self) -> GrowingModel:
        if not self.members:
            raise RuntimeError(f"strategy {self.name!r} has not been updated yet")
        return self.members[int(np.argmax(self.weights))]


@register_strategy
class DriftEnsemble(_Ensemble):
    """The drift-aware ensemble with its error-based drift detector (module docstring)."""

    name = "drift_ensemble"
    options: ClassVar[dict[str, Any]] = {
        "max_members": 3, "tolerance": 0.02, "threshold": 2.0, "min_history": 3,
        "temperature": 0.02,
    }  # fmt: skip

    def __init__(
        self,
        max_members: int = 3,
        tolerance: float = 0.02,
        threshold: float = 2.0,
        min_history: int = 3,
        temperature: float = 0.02,
    ) -> None:
        if max_members < 1 or tolerance < 0 or temperature <= 0:
            raise ValueError(
                "drift_ensemble needs max_members >= 1, tolerance >= 0, temperature > 0"
            )
        self.max_members = max_members
        self.tolerance = tolerance
        self.threshold = threshold
        self.min_history = min_history
        self.temperature = temperature
        self.detector = ErrorDriftDetector(threshold, min_history)
        self.members = []
        self.weights = np.ones(0)
        self.detections: list[int] = []

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        train, valid = ctx.training_data(t, t)
        if not self.members:
            first = ctx.new_model(ctx.seed)
            stats = ctx.fit(first, train, valid)
            self.members, self.weights = [first], np.ones(1)
            return update_stats([stats], members=1, trained=[0], drift=False)
        for member in self.members:
            ctx.follow(member)
        errors = np.array([ctx.logloss(m.model, train) for m in self.members])
        drift = self.detector.update(float(errors.min()))
        matched = [i for i, e in enumerate(errors) if e <= errors.min() * (1 + self.tolerance)]
        fits = [ctx.fit(self.members[i], train, valid) for i in matched]
        if drift:
            self.detections.append(t)
            if len(self.members) >= self.max_members:
                del self.members[int(np.argmax(errors))]
            fresh = ctx.new_model(ctx.seed + 104_729 * (t + 1))
            fits.append(ctx.fit(fresh, train, valid))
            self.members.append(fresh)
        holdout = np.array([ctx.logloss(m.model, valid) for m in self.members])
        self.weights = _softmax_weights(holdout, self.temperature)
        return update_stats(
            fits,
            members=len(self.members),
            trained=matched,
            drift=drift,
            errors=[round(float(e), 5) for e in errors],
            weights=[round(float(w), 4) for w in self.weights],
        )


@register_strategy
class AdaMoE(_Ensemble):
    """Experts updated at different speeds, mixed by their recent errors (module
    docstring)."""

    name = "adamoe"
    options: ClassVar[dict[str, Any]] = {
        "experts": 2, "lr_ratio": 0.3, "decay": 0.5, "temperature": 0.02,
    }  # fmt: skip

    def __init__(
        self, experts: int = 2, lr_ratio: float = 0.3, decay: float = 0.5, temperature: float = 0.02
    ) -> None:
        if experts < 1 or not 0 < lr_ratio <= 1 or not 0 <= decay < 1 or temperature <= 0:
            raise ValueError(
                "adamoe needs experts >= 1, 0 < lr_ratio <= 1, 0 <= decay < 1, temperature > 0"
            )
        self.experts = experts
        self.lr_ratio = lr_ratio
        self.decay = decay
        self.temperature = temperature
        self.members = []
        self.weights = np.ones(0)
        self.ema = np.zeros(0)

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        train, valid = ctx.training_data(t, t)
        base = ctx.train_config.learning_rate
        if not self.members:
            self.members = [ctx.new_model(ctx.seed + 7 * k) for k in range(self.experts)]
            self.ema = np.zeros(self.experts)
        else:
            for member in self.members:
                ctx.follow(member)
            errors = np.array([ctx.logloss(m.model, train) for m in self.members])
            self.ema = (
                errors if not self.ema.any() else self.decay * self.ema + (1 - self.decay) * errors
            )
        fits = [
            ctx.fit(m, train, valid, learning_rate=base * self.lr_ratio**k)
            for k, m in enumerate(self.members)
        ]
        self.weights = (
            _softmax_weights(self.ema, self.temperature)
            if self.ema.any()
            else np.full(self.experts, 1 / self.experts)
        )
        return update_stats(
            fits,
            ema=[round(float(e), 5) for e in self.ema],
            weights=[round(float(w), 4) for w in self.weights],
            learning_rates=[base * self.lr_ratio**k for k in range(self.experts)],
        )
