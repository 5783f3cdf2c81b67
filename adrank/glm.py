"""A small L2-penalised binomial logistic regression (Newton's method, numpy only).

Used where a few dozen to a few hundred dense columns meet at most some ten thousand rows: the
reward model of off-policy evaluation (:mod:`adrank.ope.reward_models`) and the ML-assisted
shrinkage target (:mod:`adrank.shrinkage`). Not a CTR model: those are in ``models/``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["fit_logistic", "sigmoid"]

log = logging.getLogger(__name__)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def fit_logistic(
    x: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray | None = None,
    l2: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-8,
) -> np.ndarray:
    """Coefficients (1 + D,) of ``P(y = 1) = sigmoid(b + x w)`` maximising the binomial
    log-likelihood of ``successes`` out of ``trials`` (1 per row by default) minus
    ``l2 / 2 * |w|^2`` (the intercept ``b`` is not penalised). ``x`` is (N, D)."""
    n = len(x)
    trials = np.ones(n) if trials is None else np.asarray(trials, dtype=np.float64)
    y = np.asarray(successes, dtype=np.float64)
    design = np.concatenate([np.ones((n, 1)), np.asarray(x, dtype=np.float64)], axis=1)
    penalty = np.full(design.shape[1], float(l2))
    penalty[0] = 0.0
    coef = np.zeros(design.shape[1])
    mean = float(np.clip(y.sum() / trials.sum(), 1e-6, 1 - 1e-6))
    coef[0] = np.log(mean / (1 - mean))
    for it in range(max_iter):
        p = sigmoid(design @ coef)
        grad = design.T @ (trials * p - y) + penalty * coef
        hess = (design * (trials * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-10 * np.eye(len(coef)), grad)
        coef -= step
        if np.max(np.abs(step)) < tol:
            log.debug("logistic regression converged after %d Newton steps", it + 1)
            break
    return coef
