"""adrank's IPS and SNIPS equal obp 0.5.7's to 1e-6 on obp's exported Bernoulli-TS policy.

The fixture (tests/fixtures/ope/) was exported by benchmarks/peers/obp_run.py: obp's
action distribution (BernoulliTS, ZOZOTOWN prior, campaign all, random_state 12345,
n_sim 100000) as the (80, 3) table obp tiles over every round, and obp's estimates on the
uniform-random ``all`` logs. obp itself is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adrank.ope import evaluate_policy, load_action_dist, open_bandit_logs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ope"


def test_fixture_is_a_valid_policy() -> None:
    dist = load_action_dist(FIXTURES / "obp_bts_all_action_dist.npy")
    assert dist.shape == (80, 3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)


@pytest.mark.integration
def test_ips_snips_equal_obp(data_dir) -> None:
    obp = json.loads((FIXTURES / "obp_bts_all.json").read_text())
    data = open_bandit_logs(data_dir, "random", "all")
    assert data.n_rounds == obp["n_rounds"]
    assert data.reward.mean() == pytest.approx(obp["random_logs_mean_reward"], abs=1e-12)
    dist = load_action_dist(FIXTURES / "obp_bts_all_action_dist.npy")
    out = {e.name: e for e in evaluate_policy(data, dist, reward_model=None, n_bootstrap=10)}
    assert out["ips"].value == pytest.approx(obp["estimates"]["ipw"]["value"], abs=1e-6, rel=0)
    assert out["snips"].value == pytest.approx(obp["estimates"]["snipw"]["value"], abs=1e-6, rel=0)
    # the README's number: IPS relative to the random policy's mean reward
    assert out["ips"].value / data.reward.mean() == pytest.approx(1.198, abs=5e-4)
