"""Off-policy evaluation: a new policy's expected reward per round from logged bandit data.

:func:`evaluate_policy` runs the direct method, IPS, self-normalised IPS and doubly robust
estimators (:mod:`adrank.ope.estimators`) with bootstrap intervals on validated logs
(:mod:`adrank.ope.data`) and a reward model (:mod:`adrank.ope.reward_models`). The command is
``adrank ope``; docs/ope.md has examples.
"""

from __future__ import annotations

import logging

import numpy as np

from adrank.ope.data import (
    LoggedData,
    OffPolicyDataError,
    check_action_dist,
    load_action_dist,
    logged_data,
    open_bandit_logs,
    read_table,
)
from adrank.ope.estimators import (
    ESTIMATORS,
    Estimate,
    OffPolicyInputs,
    bootstrap_interval,
    estimate_all,
    round_terms,
)
from adrank.ope.positions import position_ctr, wilson_interval
from adrank.ope.reward_models import (
    REWARD_MODELS,
    CellRewardModel,
    LogisticRewardModel,
    make_reward_model,
)

__all__ = [
    "ESTIMATORS",
    "REWARD_MODELS",
    "CellRewardModel",
    "Estimate",
    "LoggedData",
    "LogisticRewardModel",
    "OffPolicyDataError",
    "OffPolicyInputs",
    "bootstrap_interval",
    "check_action_dist",
    "estimate_all",
    "evaluate_policy",
    "load_action_dist",
    "logged_data",
    "on_policy_value",
    "open_bandit_logs",
    "position_ctr",
    "read_table",
    "round_terms",
    "wilson_interval",
]

log = logging.getLogger(__name__)


def _check_compatible(data: LoggedData, action_dist: np.ndarray) -> None:
    n_actions, n_positions = action_dist.shape[-2:]
    if action_dist.ndim == 3 and action_dist.shape[0] != data.n_rounds:
        raise OffPolicyDataError(
            f"the policy has {action_dist.shape[0]} rounds but the logs have {data.n_rounds} rows"
        )
    bad = data.action >= n_actions
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise OffPolicyDataError(
            f"the logs show action {int(data.action[row])} at row {row} but the policy has "
            f"{n_actions} actions (ids 0..{n_actions - 1})"
        )
    if len(data.positions) > n_positions:
        raise OffPolicyDataError(
            f"the logs have {len(data.positions)} positions {list(data.positions)} but the "
            f"policy has {n_positions}"
        )
    if len(data.positions) < n_positions:
        log.warning(
            "the logs have %d distinct positions %s and the policy %d: they are mapped to the "
            "policy's first %d positions in ascending order",
            len(data.positions), list(data.positions), n_positions, len(data.positions),
        )  # fmt: skip


def evaluate_policy(
    data: LoggedData,
    action_dist: np.ndarray,
    reward_model: str | CellRewardModel | LogisticRewardModel | None = "cell",
    n_bootstrap: int = 1000,
    seed: int = 12345,
    level: float = 0.95,
) -> list[Estimate]:
    """DM, IPS, SNIPS and DR estimates of the policy's expected reward per round.

    ``action_dist`` (n, A, K) or (A, K) is checked by :func:`check_action_dist`;
    ``reward_model`` is a name in :data:`REWARD_MODELS`, an unfitted model, or ``None`` (then
    only IPS and SNIPS). Intervals: :func:`bootstrap_interval` with ``n_bootstrap`` and
    ``seed``."""
    action_dist = check_action_dist(action_dist)
    _check_compatible(data, action_dist)
    warn_unlogged_actions(data, action_dist)
    q_hat = None
    if reward_model is not None:
        model = make_reward_model(reward_model) if isinstance(reward_model, str) else reward_model
        q_hat = model.fit(data, *action_dist.shape[-2:]).predict(data)
    terms = round_terms(
        data.reward, data.action, data.position, data.propensity, action_dist, q_hat
    )
    return estimate_all(terms, n_bootstrap=n_bootstrap, seed=seed, level=level)


def unlogged_share(data: LoggedData, action_dist: np.ndarray) -> float:
    """The policy's mean probability (over rounds and positions) on actions that no logged
    round shows: their rewards are never observed."""
    full = action_dist if action_dist.ndim == 3 else action_dist[None]
    unseen = np.ones(full.shape[1], dtype=bool)
    unseen[np.unique(data.action)] = False
    return float(full[:, unseen, :].sum(axis=1).mean())


def warn_unlogged_actions(data: LoggedData, action_dist: np.ndarray) -> None:
    """Warn when the policy puts probability on actions the logs never show: IPS and SNIPS
    see no reward for them (they count as 0), and DM and DR extrapolate a reward model to
    them, so the estimators disagree for a reason no interval shows."""
    share = unlogged_share(data, action_dist)
    if share > 0.01:
        log.warning(
            "the policy puts %.1f%% of its probability (mean over rounds and positions) on "
            "actions the logs never show: their rewards are unobserved, so IPS/SNIPS count "
            "them as 0 and DM/DR extrapolate to them; the estimates are not comparable to "
            "the logs' value for that share",
            100 * share,
        )


def on_policy_value(
    reward: np.ndarray, n_bootstrap: int = 1000, seed: int = 12345, level: float = 0.95
) -> Estimate:
    """The mean reward of logs collected by the policy itself (the ground truth an
    off-policy estimate is checked against), with the same bootstrap interval."""
    reward = np.asarray(reward, dtype=np.float64)
    terms = OffPolicyInputs(weight=np.ones_like(reward), reward=reward)
    lo, hi = bootstrap_interval(terms, n_bootstrap, seed, level)["ips"]
    return Estimate("on_policy", float(reward.mean()), lo, hi, level)
