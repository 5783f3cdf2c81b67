"""Off-policy estimators of a policy's expected reward per round, with bootstrap intervals.

Notation (one logged round i of n): the logging policy showed action ``a_i`` at position
``k_i`` (a slot of the page) with propensity ``p_i = pi_0(a_i | x_i, k_i)`` and observed the
reward ``r_i`` (a click). The evaluation policy ``pi_e`` is given as its action distribution
``pi_e(a | x_i, k)``, an array (n, A, K) whose every (i, :, k) sums to 1. As in Open Bandit
Pipeline (obp), the position is the logged one: each estimator asks "what would the reward at
this slot have been had ``pi_e`` filled it". With the importance weight
``w_i = pi_e(a_i | x_i, k_i) / p_i`` and a reward model ``q(x, a, k)``:

* IPS: ``mean_i w_i r_i``;
* SNIPS (self-normalised IPS): ``sum_i w_i r_i / sum_i w_i``;
* DM (direct method): ``mean_i sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)``;
* DR (doubly robust): ``DM + mean_i w_i (r_i - q(x_i, a_i, k_i))``.

Intervals are percentile bootstrap intervals over rounds (:func:`bootstrap_interval`): the
rounds are resampled with replacement ``n_bootstrap`` times with ``numpy.random.default_rng
(seed)`` and every estimator is recomputed on each resample (SNIPS re-normalised on it). The
reward model is fitted once on all rounds and held fixed, so the DM and DR intervals leave out
the reward model's own fitting noise (obp's intervals do the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adrank.ope.data import OffPolicyDataError

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "OffPolicyInputs",
    "bootstrap_interval",
    "estimate_all",
    "round_terms",
]

ESTIMATORS: tuple[str, ...] = ("dm", "ips", "snips", "dr")


@dataclass(frozen=True)
class OffPolicyInputs:
    """The per-round quantities every estimator needs, each (n,).

    ``weight`` is ``pi_e(a_i | x_i, k_i) / p_i``; ``reward`` is ``r_i``; ``q_logged`` is the
    reward model at the logged action ``q(x_i, a_i, k_i)``; ``q_policy`` is the reward model
    averaged over the evaluation policy ``sum_a pi_e(a | x_i, k_i) q(x_i, a, k_i)``. The last
    two are ``None`` without a reward model (then only IPS and SNIPS are defined)."""

    weight: np.ndarray
    reward: np.ndarray
    q_logged: np.ndarray | None = None
    q_policy: np.ndarray | None = None


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its bootstrap interval (``level`` e.g. 0.95)."""

    name: str
    value: float
    lower: float
    upper: float
    level: float

    def as_dict(self) -> dict[str, float | str]:
        return {
            "estimator": self.name,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "level": self.level,
        }


def round_terms(
    reward: np.ndarray,
    action: np.ndarray,
    position: np.ndarray,
    propensity: np.ndarray,
    action_dist: np.ndarray,
    q_hat: np.ndarray | None = None,
) -> OffPolicyInputs:
    """The per-round terms from validated arrays.

    ``reward``, ``propensity`` float (n,); ``action`` int in [0, A) (n,); ``position`` int in
    [0, K) (n,); ``action_dist`` (n, A, K) or (A, K) for a policy that ignores the context;
    ``q_hat`` the reward model's predictions (n, A) at each round's logged position, or
    ``None``."""
    n = len(reward)
    rows = np.arange(n)
    if action_dist.ndim == 2:  # context-free: one (A, K) table for every round
        pi_logged = action_dist[action, position]
        pi_at_position = action_dist[:, position].T  # (n, A)
    else:
        pi_logged = action_dist[rows, action, position]
        pi_at_position = action_dist[rows, :, position]  # (n, A)
    weight = pi_logged / propensity
    if q_hat is None:
        return OffPolicyInputs(weight=weight, reward=reward)
    return OffPolicyInputs(
        weight=weight,
        reward=reward,
        q_logged=q_hat[rows, action],
        q_policy=np.einsum("na,na->n", pi_at_position, q_hat),
    )


def _estimates(terms: OffPolicyInputs, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every defined estimator; with ``index`` (B, n) the B resamples' values (B,) each."""

    def take(a: np.ndarray) -> np.ndarray:
        return a if index is None else a[index]

    w, r = take(terms.weight), take(terms.reward)
    wr = w * r
    out = {"ips": wr.mean(axis=-1)}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snips"] = wr.sum(axis=-1) / w.sum(axis=-1)
    if terms.q_logged is not None and terms.q_policy is not None:
        dm = take(terms.q_policy).mean(axis=-1)
        out["dm"] = dm
        out["dr"] = dm + (w * (r - take(terms.q_logged))).mean(axis=-1)
    return out


def bootstrap_interval(
    terms: OffPolicyInputs,
    n_bootstrap: int = 1000,
    seed: int = 12345,
    level: float = 0.95,
    chunk: int = 100,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals ``(lower, upper)`` of every defined estimator.

    Rounds are resampled with replacement ``n_bootstrap`` times by
    ``numpy.random.default_rng(seed).integers`` (``chunk`` resamples at a time, so memory
    stays at ``chunk * n`` indices); the bounds are the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles (numpy's default linear interpolation). The same
    ``seed`` gives the same intervals."""
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(terms.reward)
    if n < 2:  # every resample of one round is that round: a width-0 "interval"
        raise ValueError(f"a bootstrap interval needs at least 2 rounds, got {n}")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        index = rng.integers(0, n, size=(size, n))
        for name, values in _estimates(terms, index).items():
            draws.setdefault(name, []).append(values)
        done += size
    alpha = (1.0 - level) / 2.0
    out = {}
    for name, parts in draws.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha]) if len(values) else (np.nan, np.nan)
        out[name] = (float(lo), float(hi))
    return out


def estimate_all(
    terms: OffPolicyInputs, n_bootstrap: int = 1000, seed: int = 12345, level: float = 0.95
) -> list[Estimate]:
    """Every defined estimator (DM, IPS, SNIPS, DR in that order; DM and DR only with a
    reward model) with its bootstrap interval.

    Raises :class:`~adrank.ope.data.OffPolicyDataError` when no round has a positive weight
    (the policy never chooses a logged action at its logged position): the logs then say
    nothing about the policy (IPS is 0 whatever the rewards, SNIPS 0/0)."""
    if not (terms.weight > 0).any():
        raise OffPolicyDataError(
            f"the policy gives probability 0 to the logged action (at its logged position) in "
            f"all {len(terms.weight)} rounds: no round carries weight, so IPS, SNIPS and DR "
            "cannot estimate it (SNIPS would be 0/0); the policy must overlap the logs"
        )
    point = _estimates(terms)
    bounds = bootstrap_interval(terms, n_bootstrap=n_bootstrap, seed=seed, level=level)
    return [
        Estimate(name, float(point[name]), *bounds[name], level)
        for name in ESTIMATORS
        if name in point
    ]
