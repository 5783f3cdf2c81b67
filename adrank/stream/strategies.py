"""Update strategies for the streaming protocol (:mod:`adrank.stream.protocol`).

A strategy decides what to train on chunk t and how to score the next one. It wraps
models; the models stay pure registry models. Options (``--option key=value``):

* ``full_retrain``: a new model on all chunks so far (0..t), every update. The reference.
* ``sliding_window`` (``window``, default 4): a new model on the last ``window`` chunks.
* ``fine_tune``: one model, trained further on each new chunk only (its vocabulary grows
  with the stream; new rows start at Adam step 0). Chunk 0 trains it from scratch, as in
  every strategy.
* ``data_driven_prior`` (``prior_weight`` 0.5, ``strength`` 20, ``feature_prior`` 1):
  fine-tuning with a Feature Prior and a Model Prior ("An Incremental Update Framework for
  Online Recommenders with Data-Driven Prior"; named so it is never confused with DDP the
  distributed wrapper).
* ``confidence_ranking`` (``ranking_weight`` 1.0): fine-tuning with a loss that ranks the
  new model's confidence against the previous model's ("Confidence Ranking for CTR
  Prediction").
* ``drift_ensemble`` and ``adamoe``: see :mod:`adrank.stream.ensembles`.

Every strategy trains on chunk 0 from scratch the same way, so they differ from t = 1.
Further strategies register with :func:`register_strategy`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from adrank.data.batches import TensorData
from adrank.stream.growing import GrowingModel
from adrank.stream.protocol import StreamContext, UpdateStats
from adrank.stream.wrappers import FeaturePrior, UpdateWrapper, frozen_copy
from adrank.train.evaluation import Predictions

logger = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "register_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    STRATEGIES[cls.name] = cls
    return cls


def build_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """The strategy ``name`` with ``options`` (unknown names and options are errors)."""
    if name not in STRATEGIES:
        raise KeyError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    options = dict(options or {})
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(
            f"strategy {name!r} has no option(s) {unknown}; its options: {dict(cls.options)}"
        )
    return cls(**{k: type(cls.options[k])(v) for k, v in options.items()})


class Strategy(ABC):
    """How a model is updated on a stream. ``options`` maps option names to defaults."""

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    #: Whether the model of :meth:`current` alone gives the predictions the stream scored.
    #: False when scoring adds parts a run directory does not hold (an ensemble's other
    #: members, feature-prior offsets): such a run directory must not be served.
    scores_as_saved: ClassVar[bool] = True

    @abstractmethod
    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        """Train on chunk ``t`` (``ctx.advance(t)`` was called)."""

    @abstractmethod
    def predict(self, ctx: StreamContext, data: TensorData) -> Predictions:
        """Predictions on the next chunk."""

    @abstractmethod
    def current(self) -> GrowingModel:
        """The model a run directory of this update holds (for an ensemble: its newest
        member)."""

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.options}


class _SingleModel(Strategy):
    """A strategy that serves one model (``self.model``)."""

    model: GrowingModel | None = None

    def predict(self, ctx: StreamContext, data: TensorData) -> Predictions:
        return ctx.predict(self.current().model, data)

    def current(self) -> GrowingModel:
        if self.model is None:
            raise RuntimeError(f"strategy {self.name!r} has not been updated yet")
        return self.model


@register_strategy
class FullRetrain(_SingleModel):
    """A new model on chunks 0..t each update (the reference; the most compute)."""

    name = "full_retrain"

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        self.model = ctx.new_model(ctx.seed + t)
        return ctx.fit(self.model, *ctx.training_data(0, t))


@register_strategy
class SlidingWindow(_SingleModel):
    """A new model on the last ``window`` chunks each update."""

    name = "sliding_window"
    options: ClassVar[dict[str, Any]] = {"window": 4}

    def __init__(self, window: int = 4) -> None:
        if window < 1:
            raise ValueError(f"sliding_window: window must be >= 1 chunk, got {window}")
        self.window = window

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        self.model = ctx.new_model(ctx.seed + t)
        return ctx.fit(self.model, *ctx.training_data(max(0, t - self.window + 1), t))


@register_strategy
class FineTune(_SingleModel):
    """One model trained further on each new chunk (plus, with ``replay`` > 0, a seeded
    uniform sample of ``replay`` x its rows from the earlier chunks)."""

    name = "fine_tune"
    options: ClassVar[dict[str, Any]] = {"replay": 0.0}

    def __init__(self, replay: float = 0.0) -> None:
        if replay < 0:
            raise ValueError(f"fine_tune: replay must be >= 0, got {replay}")
        self.replay = replay

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        if self.model is None:
            self.model = ctx.new_model(ctx.seed)
        else:
            ctx.follow(self.model)
        return ctx.fit(self.model, *ctx.training_data(t, t, self.replay))


@register_strategy
class DataDrivenPrior(_SingleModel):
    """``data_driven_prior`` (not DistributedDataParallel): fine-tuning with a Feature Prior
    (smoothed click rates of every field value over the stream, a fixed logit offset the
    model learns around) and a Model Prior (the previous model's predictions as the prior of
    the update, ``prior_weight * BCE(p_new, p_previous)``); see
    :mod:`adrank.stream.wrappers`. ``feature_prior=0`` or ``prior_weight=0`` turn a part
    off."""

    scores_as_saved = False  # the served wrapper adds the feature-prior offsets

    name = "data_driven_prior"
    options: ClassVar[dict[str, Any]] = {
        "prior_weight": 0.5, "strength": 20.0, "feature_prior": 1, "replay": 0.0,
    }  # fmt: skip

    def __init__(
        self,
        prior_weight: float = 0.5,
        strength: float = 20.0,
        feature_prior: int = 1,
        replay: float = 0.0,
    ) -> None:
        self.replay = replay
        self.prior_weight = prior_weight
        self.strength = strength
        self.feature_prior = feature_prior
        self.counts = FeaturePrior(strength)
        self.served: UpdateWrapper | None = None

    def _offsets(self, ctx: StreamContext) -> dict[str, Any] | None:
        if not self.feature_prior:
            return None
        model = self.current()
        rows = {f.name: f.vocab_size for f in model.feature_map.fields if f.kind == "categorical"}
        return self.counts.offsets(rows)

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        train, valid = ctx.training_data(t, t, self.replay)
        previous = None
        if self.model is None:
            self.model = ctx.new_model(ctx.seed)
        else:
            ctx.follow(self.model)
            previous = frozen_copy(self.model.model)
        fresh = ctx.split(t)[0].height  # replayed rows were counted when they arrived
        self.counts.add(train, ctx.feature_map, ctx.label_index, rows=fresh)
        wrapper = UpdateWrapper(self.model.model, previous, self._offsets(ctx), self.prior_weight)
        stats = ctx.fit(self.model, train, valid, model=wrapper)
        self.counts.add(valid, ctx.feature_map, ctx.label_index)
        self.served = UpdateWrapper(self.model.model, None, self._offsets(ctx))
        return stats

    def predict(self, ctx: StreamContext, data: TensorData) -> Predictions:
        assert self.served is not None
        return ctx.predict(self.served, data)


@register_strategy
class ConfidenceRanking(_SingleModel):
    """Fine-tuning against the previous model: BCE plus ``ranking_weight *
    softplus(-(2y - 1)(z_new - z_previous))``, which rewards the new model for being more
    confident in the observed label than the model it replaces (see
    :mod:`adrank.stream.wrappers`)."""

    name = "confidence_ranking"
    options: ClassVar[dict[str, Any]] = {"ranking_weight": 1.0}

    def __init__(self, ranking_weight: float = 1.0) -> None:
        self.ranking_weight = ranking_weight

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        train, valid = ctx.training_data(t, t)
        if self.model is None:
            self.model = ctx.new_model(ctx.seed)
            return ctx.fit(self.model, train, valid)
        ctx.follow(self.model)
        previous = frozen_copy(self.model.model)
        wrapper = UpdateWrapper(self.model.model, previous, ranking_weight=self.ranking_weight)
        return ctx.fit(self.model, train, valid, model=wrapper)


# the ensembles (drift-aware ensemble, AdaMoE) register themselves
from adrank.stream import ensembles as _ensembles  # noqa: E402,F401
