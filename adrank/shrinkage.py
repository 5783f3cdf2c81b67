"""Click rates of many small segments (per-ad, per-item CTRs): raw, empirical Bayes, compound.

Each segment i has ``x_i`` clicks out of ``n_i`` impressions. Three estimators of its rate
``p_i``:

* :func:`raw_rates`: ``x_i / n_i``. Unbiased, and very noisy when ``n_i`` is small.
* :class:`BetaBinomialEB`: empirical Bayes. It assumes ``p_i ~ Beta(alpha, beta)``, fits the
  prior by the method of moments below, and returns the posterior means
  ``(x_i + alpha) / (n_i + alpha + beta)``. The moments: ``mu = sum x / sum n``, and the
  intra-class correlation ``rho = 1 / (alpha + beta + 1)`` solves
  ``E[S] = mu (1 - mu) [(1 - rho)(N - 1) + rho (sum n - sum n^2 / sum n)]`` with
  ``S = sum_i n_i (x_i / n_i - mu)^2`` over the N segments, clipped to [1e-6, 1 - 1e-6]
  (Kleinman 1973). ``method="ml"`` instead maximises the beta-binomial marginal likelihood.
* :class:`CompoundShrinkage`: the compound-decision estimator of "Compound Estimation for
  Binomials". It treats the ``(n_i, p_i)`` as fixed unknowns, not draws from a prior, so it
  is **not** empirical Bayes. It uses the class of ML-assisted linear shrinkage estimators

      p_i(lam, g, c) = w_i x_i / n_i + (1 - w_i) m_i(g, c),   w_i = n_i / (n_i + lam),
      m_i(g, c) = g f_i + (1 - g) c,

  where ``f_i`` is a machine-learning prediction of the segment's rate made without its own
  clicks (cross-fitted, so ``f_i`` does not depend on ``x_i``), ``c`` is a location (a grid
  of the pooled rate and quantiles of the raw rates), ``lam >= 0`` is the shrinkage strength
  and ``g`` in [0, 1] is the trust in the prediction. ``(lam, g, c)`` minimises an
  approximate Stein unbiased risk estimate (SURE) of the average squared error
  ``1/N sum_i (p_i(lam, g, c) - p_i)^2`` over the grid. For a fixed target ``m_i``,
  ``E (p_i(lam) - p_i)^2 = w_i^2 v_i + (1 - w_i)^2 (m_i - p_i)^2`` with
  ``v_i = p_i (1 - p_i) / n_i``. ``(m_i - x_i/n_i)^2 - v_i`` is unbiased for
  ``(m_i - p_i)^2``, so
  ``SURE_i = (1 - w_i)^2 (m_i - x_i / n_i)^2 + (2 w_i - 1) v_hat_i``, where
  ``v_hat_i = x_i (n_i - x_i) / (n_i^2 (n_i - 1))`` is unbiased for ``v_i`` when n_i >= 2.
  This is the binomial identity itself, with no Gaussian approximation. The approximation is
  in two places. First, a single trial (n_i = 1) has no unbiased estimate of
  ``p_i (1 - p_i)``, so those segments use the plug-in ``m_i (1 - m_i)``. Second, the
  location grid is built from the data (the pooled rate and quantiles of the raw rates).

The paper's full text was not available here. This module implements the estimator class
and the risk estimate from its abstract ("approximate SURE for the average MSE given any
class of estimators; ML-assisted linear shrinkage; binomials directly, without Gaussian
approximations"). The derivation above is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BetaBinomialEB",
    "CompoundShrinkage",
    "approximate_sure",
    "raw_rates",
    "unbiased_variance",
]

DEFAULT_LAMBDAS = np.concatenate([[0.0], np.geomspace(0.1, 1e4, 81)])
DEFAULT_TRUST = np.linspace(0.0, 1.0, 21)


def _counts(clicks: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(clicks, dtype=np.float64).reshape(-1)
    n = np.asarray(trials, dtype=np.float64).reshape(-1)
    if x.shape != n.shape:
        raise ValueError(f"clicks has {x.size} values but trials has {n.size}")
    if np.any(n < 1):
        i = int(np.flatnonzero(n < 1)[0])
        raise ValueError(f"trials[{i}] = {n[i]:g}; every segment needs at least 1 trial")
    if np.any((x < 0) | (x > n)):
        i = int(np.flatnonzero((x < 0) | (x > n))[0])
        raise ValueError(f"clicks[{i}] = {x[i]:g} is outside [0, trials[{i}] = {n[i]:g}]")
    return x, n


def raw_rates(clicks: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """``clicks / trials`` (N,)."""
    x, n = _counts(clicks, trials)
    return x / n


def unbiased_variance(
    clicks: np.ndarray, trials: np.ndarray, fallback: np.ndarray | None = None
) -> np.ndarray:
    """``x (n - x) / (n^2 (n - 1))`` (N,), unbiased for ``p (1 - p) / n`` when n >= 2. Where
    n = 1, it is ``fallback (1 - fallback)`` (a plug-in rate (N,)) or NaN."""
    x, n = _counts(clicks, trials)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = x * (n - x) / (n * n * (n - 1))
    single = n < 2
    if fallback is not None:
        f = np.asarray(fallback, dtype=np.float64).reshape(-1)
        v[single] = f[single] * (1 - f[single])
    else:
        v[single] = np.nan
    return v


def approximate_sure(
    clicks: np.ndarray, trials: np.ndarray, target: np.ndarray, lam: float
) -> float:
    """The approximate SURE of ``w x/n + (1 - w) target`` with ``w = n / (n + lam)``: an
    estimate of its average squared error over the segments (see the module docstring)."""
    x, n = _counts(clicks, trials)
    m = np.asarray(target, dtype=np.float64).reshape(-1)
    w = n / (n + lam)
    v = unbiased_variance(x, n, fallback=m)
    return float(np.mean((1 - w) ** 2 * (m - x / n) ** 2 + (2 * w - 1) * v))


@dataclass
class BetaBinomialEB:
    """Beta-binomial empirical Bayes: a prior fitted by the method of ``"moments"`` (module
    docstring) or by marginal maximum likelihood (``"ml"``: the beta-binomial likelihood of
    all segments maximised over ``(logit mu, log(alpha + beta))`` with L-BFGS, started at
    the moments fit), and the posterior means."""

    method: str = "moments"

    def fit(self, clicks: np.ndarray, trials: np.ndarray) -> BetaBinomialEB:
        if self.method not in ("moments", "ml"):
            raise ValueError(f"method must be 'moments' or 'ml', got {self.method!r}")
        self._fit_moments(clicks, trials)
        if self.method == "ml":
            self._fit_marginal_ml(clicks, trials)
        return self

    def _fit_marginal_ml(self, clicks: np.ndarray, trials: np.ndarray) -> None:
        import torch

        x, n = (torch.as_tensor(a, dtype=torch.float64) for a in _counts(clicks, trials))
        mu0 = min(max(self.mean_, 1e-6), 1 - 1e-6)
        logit = torch.tensor(np.log(mu0 / (1 - mu0)), dtype=torch.float64, requires_grad=True)
        log_s = torch.tensor(np.log(self.alpha_ + self.beta_), dtype=torch.float64)
        log_s.requires_grad_(True)
        opt = torch.optim.LBFGS([logit, log_s], max_iter=200, line_search_fn="strong_wolfe")

        def nll() -> torch.Tensor:
            opt.zero_grad()
            a = torch.sigmoid(logit) * torch.exp(log_s)
            b = (1 - torch.sigmoid(logit)) * torch.exp(log_s)
            ll = (torch.lgamma(x + a) + torch.lgamma(n - x + b) - torch.lgamma(n + a + b)
                  - torch.lgamma(a) - torch.lgamma(b) + torch.lgamma(a + b))  # fmt: skip
            loss = -ll.sum()
            loss.backward()
            return loss

        opt.step(nll)
        strength = float(torch.exp(log_s.detach()))
        self.mean_ = float(torch.sigmoid(logit.detach()))
        self.rho_ = 1 / (strength + 1)
        self.alpha_, self.beta_ = self.mean_ * strength, (1 - self.mean_) * strength

    def _fit_moments(self, clicks: np.ndarray, trials: np.ndarray) -> None:
        x, n = _counts(clicks, trials)
        total = n.sum()
        mu = float(np.clip(x.sum() / total, 1e-9, 1 - 1e-9))
        s = float(np.sum(n * (x / n - mu) ** 2))
        k = len(n)
        denom = total - np.sum(n * n) / total - (k - 1)
        rho = (s / (mu * (1 - mu)) - (k - 1)) / denom if denom > 0 else 1e-6
        rho = float(np.clip(rho, 1e-6, 1 - 1e-6))
        strength = 1 / rho - 1
        self.mean_, self.rho_ = mu, rho
        self.alpha_, self.beta_ = mu * strength, (1 - mu) * strength

    def predict(self, clicks: np.ndarray, trials: np.ndarray) -> np.ndarray:
        x, n = _counts(clicks, trials)
        return (x + self.alpha_) / (n + self.alpha_ + self.beta_)


@dataclass
class CompoundShrinkage:
    """Approximate-SURE selection over ML-assisted linear shrinkage (module docstring).

    ``lambdas``, ``trust`` and ``locations`` are the grids of ``lam``, ``g`` and the
    location ``c`` that stands in for ``mu`` in the target ``g f_i + (1 - g) c`` (default:
    the pooled rate and 41 quantiles of the raw rates, so the class also holds "shrink
    towards the best constant"). ``fit`` sets ``lambda_``, ``trust_``, ``location_``,
    ``sure_`` (the minimum) and ``mean_`` (the pooled rate)."""

    lambdas: np.ndarray | None = None
    trust: np.ndarray | None = None
    locations: np.ndarray | None = None

    def fit(
        self, clicks: np.ndarray, trials: np.ndarray, prediction: np.ndarray | None = None
    ) -> CompoundShrinkage:
        """``prediction`` (N,): the cross-fitted ML rate ``f_i`` of each segment, or ``None``
        to shrink towards a constant only (``g = 0``)."""
        x, n = _counts(clicks, trials)
        self.mean_ = float(x.sum() / n.sum())
        lambdas = DEFAULT_LAMBDAS if self.lambdas is None else np.asarray(self.lambdas)
        trust = (
            np.zeros(1)
            if prediction is None
            else (DEFAULT_TRUST if self.trust is None else np.asarray(self.trust))
        )
        if self.locations is None:
            quantiles = np.quantile(x / n, np.linspace(0, 1, 41))
            locations = np.unique(np.concatenate([[self.mean_], quantiles]))
        else:
            locations = np.asarray(self.locations, dtype=np.float64)
        f = np.zeros_like(x) if prediction is None else np.asarray(prediction, dtype=np.float64)
        w = n[None, :] / (n[None, :] + lambdas[:, None])  # (L, N)
        best = (np.inf, 0.0, 0.0, self.mean_)
        for g in trust:
            for c in locations:
                m = g * f + (1 - g) * c
                v = unbiased_variance(x, n, fallback=m)
                risk = np.mean((1 - w) ** 2 * (m - x / n) ** 2 + (2 * w - 1) * v, axis=1)
                i = int(np.argmin(risk))
                if risk[i] < best[0]:
                    best = (float(risk[i]), float(lambdas[i]), float(g), float(c))
        self.sure_, self.lambda_, self.trust_, self.location_ = best
        return self

    def predict(
        self, clicks: np.ndarray, trials: np.ndarray, prediction: np.ndarray | None = None
    ) -> np.ndarray:
        x, n = _counts(clicks, trials)
        f = np.zeros_like(x) if prediction is None else np.asarray(prediction, dtype=np.float64)
        m = self.trust_ * f + (1 - self.trust_) * self.location_
        w = n / (n + self.lambda_)
        return w * x / n + (1 - w) * m
