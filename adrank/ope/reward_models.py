"""Reward models ``q(x, a, k)`` for the direct method and doubly robust estimators.

Both predict, for every round i, the expected reward of every action at the round's logged
position: an array (n, A).

* :class:`CellRewardModel` (``"cell"``): the click rate of each (action, position) cell,
  shrunk towards its position's rate with ``prior_strength`` pseudo-rounds:
  ``q(a, k) = (clicks(a, k) + s * ctr(k)) / (shown(a, k) + s)``. It ignores the context. With
  few clicks per cell the raw cell rates are mostly 0, so some shrinkage is needed.
* :class:`LogisticRewardModel` (``"logistic"``): an L2-penalised logistic regression on
  one-hot action, one-hot position and the context columns (additive logits
  ``b + beta_a + gamma_k + x theta``), fitted by Newton's method (a few iterations on a
  small dense design). The penalty ``l2`` applies to every weight but the intercept.
"""

from __future__ import annotations

import numpy as np

from adrank.glm import fit_logistic, sigmoid
from adrank.ope.data import LoggedData

__all__ = ["REWARD_MODELS", "CellRewardModel", "LogisticRewardModel", "make_reward_model"]


class CellRewardModel:
    """Per-(action, position) click rate shrunk to the position's rate (see module doc)."""

    def __init__(self, prior_strength: float = 10.0) -> None:
        self.prior_strength = prior_strength

    def fit(self, data: LoggedData, n_actions: int, n_positions: int) -> CellRewardModel:
        shown = np.zeros((n_actions, n_positions))
        clicks = np.zeros((n_actions, n_positions))
        np.add.at(shown, (data.action, data.position), 1.0)
        np.add.at(clicks, (data.action, data.position), data.reward)
        position_rate = clicks.sum(0) / np.maximum(shown.sum(0), 1.0)
        s = self.prior_strength
        self.table_ = (clicks + s * position_rate) / (shown + s)  # (A, K)
        return self

    def predict(self, data: LoggedData) -> np.ndarray:
        """(n, A): every action's expected reward at each round's position."""
        return self.table_[:, data.position].T


class LogisticRewardModel:
    """L2 logistic regression on action, position and context (see module doc)."""

    def __init__(self, l2: float = 1.0, max_iter: int = 50, tol: float = 1e-8) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol

    def _design(self, data: LoggedData, action: np.ndarray) -> np.ndarray:
        cols = [np.eye(self.n_actions_)[action]]
        cols.append(np.eye(self.n_positions_)[data.position])
        if data.context is not None:
            cols.append(data.context)
        return np.concatenate(cols, axis=1)

    def fit(self, data: LoggedData, n_actions: int, n_positions: int) -> LogisticRewardModel:
        self.n_actions_, self.n_positions_ = n_actions, n_positions
        x = self._design(data, data.action)
        self.coef_ = fit_logistic(x, data.reward, l2=self.l2, max_iter=self.max_iter, tol=self.tol)
        return self

    def predict(self, data: LoggedData) -> np.ndarray:
        """(n, A): every action's expected reward at each round's position."""
        a = self.n_actions_
        base = self.coef_[0] + self.coef_[1 + a + data.position]
        if data.context is not None:
            base = base + data.context @ self.coef_[1 + a + self.n_positions_ :]
        logits = base[:, None] + self.coef_[1 : 1 + a][None, :]
        return sigmoid(logits)


REWARD_MODELS = {"cell": CellRewardModel, "logistic": LogisticRewardModel}


def make_reward_model(name: str) -> CellRewardModel | LogisticRewardModel:
    """A reward model by name (``cell`` or ``logistic``) with its documented defaults."""
    if name not in REWARD_MODELS:
        raise ValueError(f"unknown reward model {name!r}; expected one of {sorted(REWARD_MODELS)}")
    return REWARD_MODELS[name]()
