"""Open Bandit Pipeline (obp 0.5.7) side of the OPE comparison (inside ``benchmarks/.peers/obp``).

    benchmarks/.peers/obp/bin/python benchmarks/peers/obp_run.py OUT_DIR [N_BOOTSTRAP]

Follows obp's README on the small Open Bandit Dataset that ships inside the package (the
``all`` campaign; byte-identical to ``shared/data/open_bandit_position/*_all*``): the
Bernoulli-TS policy (``is_zozotown_prior=True``, ``campaign="all"``, ``random_state=12345``)
is turned into an action distribution with ``n_sim=100000`` and evaluated on the
uniform-random logs with IPS (obp's ``ipw``), SNIPS (``snipw``), DM and DR. The reward model
is obp's ``RegressionModel`` (one scikit-learn ``LogisticRegression(max_iter=1000,
random_state=12345)`` per position on one-hot user features + item features) fitted with
``fit_predict(n_folds=3, random_state=12345)`` as in obp's examples. Intervals: obp's
``estimate_intervals`` (``n_bootstrap_samples``, ``random_state=12345``, alpha 0.05). The
on-policy value is obp's ``calc_on_policy_policy_value_estimate`` on the Bernoulli-TS logs.

Writes ``OUT_DIR/obp_bts_all_action_dist.npy`` (the (n_actions, len_list) table, which obp
tiles over every round), ``OUT_DIR/obp_results.json``, and obp's own inputs in its row order
(``obp_random_all_feedback.npz``: action, position, reward, pscore) with its reward model's
predictions ``obp_q_hat.npy`` (n_rounds, n_actions, len_list). No adrank imports.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import obp
    import sklearn
    from obp.dataset import OpenBanditDataset
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        OffPolicyEvaluation,
        RegressionModel,
        SelfNormalizedInverseProbabilityWeighting,
    )
    from obp.policy import BernoulliTS
    from sklearn.linear_model import LogisticRegression

    out = Path(sys.argv[1])
    n_boot = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dataset = OpenBanditDataset(behavior_policy="random", campaign="all")
    feedback = dataset.obtain_batch_bandit_feedback()
    policy = BernoulliTS(
        n_actions=dataset.n_actions,
        len_list=dataset.len_list,
        is_zozotown_prior=True,
        campaign="all",
        random_state=12345,
    )
    action_dist = policy.compute_batch_action_dist(n_sim=100000, n_rounds=feedback["n_rounds"])
    assert np.all(action_dist == action_dist[0]), "BernoulliTS's distribution is context-free"
    np.save(out / "obp_bts_all_action_dist.npy", action_dist[0])

    regression = RegressionModel(
        n_actions=dataset.n_actions,
        len_list=dataset.len_list,
        action_context=dataset.action_context,
        base_model=LogisticRegression(max_iter=1000, random_state=12345),
    )
    q_hat = regression.fit_predict(
        context=feedback["context"],
        action=feedback["action"],
        reward=feedback["reward"],
        position=feedback["position"],
        pscore=feedback["pscore"],
        n_folds=3,
        random_state=12345,
    )
    # obp's own inputs in obp's row order (it sorts the log by timestamp), so adrank can be
    # fed obp's reward model too: then DM and DR must agree as well
    np.save(out / "obp_q_hat.npy", q_hat)
    np.savez(
        out / "obp_random_all_feedback.npz",
        action=feedback["action"],
        position=feedback["position"],
        reward=feedback["reward"],
        pscore=feedback["pscore"],
    )
    ope = OffPolicyEvaluation(
        bandit_feedback=feedback,
        ope_estimators=[
            DirectMethod(),
            InverseProbabilityWeighting(),
            SelfNormalizedInverseProbabilityWeighting(),
            DoublyRobust(),
        ],
    )
    values = ope.estimate_policy_values(
        action_dist=action_dist, estimated_rewards_by_reg_model=q_hat
    )
    intervals = ope.estimate_intervals(
        action_dist=action_dist,
        estimated_rewards_by_reg_model=q_hat,
        n_bootstrap_samples=n_boot,
        random_state=12345,
    )
    on_policy = OpenBanditDataset.calc_on_policy_policy_value_estimate(
        behavior_policy="bts", campaign="all"
    )
    logged_mean = float(feedback["reward"].mean())
    result = {
        "framework": "obp",
        "versions": {
            "obp": obp.__version__,
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
        },
        "n_rounds": int(feedback["n_rounds"]),
        "n_actions": int(dataset.n_actions),
        "len_list": int(dataset.len_list),
        "random_logs_mean_reward": logged_mean,
        "bts_on_policy_value": float(on_policy),
        "n_bootstrap": n_boot,
        "estimates": {
            name: {
                "value": float(values[name]),
                "relative": float(values[name]) / logged_mean,
                "lower": float(intervals[name]["95.0% CI (lower)"]),
                "upper": float(intervals[name]["95.0% CI (upper)"]),
            }
            for name in values
        },
        "seconds": time.perf_counter() - t0,
    }
    (out / "obp_results.json").write_text(json.dumps(result, indent=2))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
