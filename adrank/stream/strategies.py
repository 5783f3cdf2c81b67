"""Update strategies for the streaming protocol (:mod:`adrank.stream.protocol`).

A strategy decides what to train on chunk t and how to score the next one. It wraps
models; the models stay pure registry models. Options (``--option key=value``):

* ``full_retrain``: a new model on all chunks so far (0..t), every update. The reference.
* ``sliding_window`` (``window``, default 4): a new model on the last ``window`` chunks.
* ``fine_tune``: one model, trained further on each new chunk only (its vocabulary grows
  with the stream; new rows start at Adam step 0). Chunk 0 trains it from scratch, as in
  every strategy.

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
    """One model trained further on each new chunk only."""

    name = "fine_tune"

    def update(self, ctx: StreamContext, t: int) -> UpdateStats:
        if self.model is None:
            self.model = ctx.new_model(ctx.seed)
        else:
            ctx.follow(self.model)
        return ctx.fit(self.model, *ctx.training_data(t, t))
