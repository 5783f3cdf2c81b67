"""Off-policy estimators on tiny hand-checkable logs, bootstrap determinism, validation errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from adrank.ope import (
    CellRewardModel,
    LogisticRewardModel,
    OffPolicyDataError,
    check_action_dist,
    evaluate_policy,
    load_action_dist,
    logged_data,
    on_policy_value,
    position_ctr,
    wilson_interval,
)

# 4 rounds, 2 actions, 2 positions (raw values 1 and 2)
LOGS = pl.DataFrame(
    {
        "action": [0, 1, 0, 1],
        "position": [1, 1, 2, 2],
        "reward": [1.0, 0.0, 0.0, 1.0],
        "propensity": [0.5, 0.5, 0.25, 0.5],
    }
)
# pi_e(a | k): position 0 -> (0.8, 0.2); position 1 -> (0.4, 0.6)
POLICY = np.array([[0.8, 0.4], [0.2, 0.6]])


def _by_name(estimates):
    return {e.name: e for e in estimates}


def test_ips_snips_by_hand() -> None:
    data = logged_data(LOGS)
    assert data.positions == ("1", "2")
    out = _by_name(evaluate_policy(data, POLICY, reward_model=None, n_bootstrap=50))
    # weights: 0.8/0.5, 0.2/0.5, 0.4/0.25, 0.6/0.5 = 1.6, 0.4, 1.6, 1.2
    assert out["ips"].value == pytest.approx((1.6 * 1 + 1.2 * 1) / 4)
    assert out["snips"].value == pytest.approx(2.8 / (1.6 + 0.4 + 1.6 + 1.2))
    assert set(out) == {"ips", "snips"}


def test_dm_dr_by_hand_with_cell_model() -> None:
    data = logged_data(LOGS)
    model = CellRewardModel(prior_strength=0.0)  # raw cell rates: q(a, k) = clicks / shown
    out = _by_name(evaluate_policy(data, POLICY, reward_model=model, n_bootstrap=50))
    q = np.array([[1.0, 0.0], [0.0, 1.0]])  # (A, K): every cell was shown once
    np.testing.assert_allclose(model.table_, q)
    dm_rounds = [0.8 * 1 + 0.2 * 0, 0.8 * 1 + 0.2 * 0, 0.4 * 0 + 0.6 * 1, 0.4 * 0 + 0.6 * 1]
    assert out["dm"].value == pytest.approx(np.mean(dm_rounds))
    # the cell model fits every logged reward exactly, so DR's correction is 0
    assert out["dr"].value == pytest.approx(out["dm"].value)
    assert [e.name for e in evaluate_policy(data, POLICY, n_bootstrap=10)] == [
        "dm", "ips", "snips", "dr"
    ]  # fmt: skip


def test_cell_model_shrinks_to_position_rate() -> None:
    data = logged_data(LOGS)
    model = CellRewardModel(prior_strength=1.0).fit(data, 2, 2)
    # position 0 rate 1/2: cell (0, 0) = (1 + 0.5) / (1 + 1)
    assert model.table_[0, 0] == pytest.approx(0.75)
    assert model.table_[1, 0] == pytest.approx(0.25)


def test_logistic_model_orders_actions() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    action = rng.integers(0, 3, n)
    rate = np.array([0.05, 0.2, 0.5])[action]
    frame = pl.DataFrame(
        {
            "action": action,
            "position": np.zeros(n, dtype=np.int64),
            "reward": (rng.random(n) < rate).astype(float),
            "propensity": np.full(n, 1 / 3),
        }
    )
    data = logged_data(frame)
    q = LogisticRewardModel(l2=0.1).fit(data, 3, 1).predict(data)
    assert q.shape == (n, 3)
    np.testing.assert_allclose(q[0], [0.05, 0.2, 0.5], atol=0.03)


def test_uniform_logging_and_same_policy_is_on_policy_mean() -> None:
    rng = np.random.default_rng(1)
    n = 500
    frame = pl.DataFrame(
        {
            "action": rng.integers(0, 4, n),
            "position": np.zeros(n, dtype=np.int64),
            "reward": (rng.random(n) < 0.3).astype(float),
            "propensity": np.full(n, 0.25),
        }
    )
    out = _by_name(evaluate_policy(logged_data(frame), np.full((4, 1), 0.25), n_bootstrap=100))
    mean = frame["reward"].mean()
    assert out["ips"].value == pytest.approx(mean)
    assert out["snips"].value == pytest.approx(mean)
    assert out["ips"].lower < mean < out["ips"].upper


def test_per_round_policy_equals_broadcast_table() -> None:
    data = logged_data(LOGS)
    per_round = np.broadcast_to(POLICY, (4, 2, 2)).copy()
    a = evaluate_policy(data, POLICY, n_bootstrap=20)
    b = evaluate_policy(data, per_round, n_bootstrap=20)
    assert [e.as_dict() for e in a] == [e.as_dict() for e in b]


def test_bootstrap_is_deterministic_and_seed_dependent() -> None:
    data = logged_data(LOGS)
    a = evaluate_policy(data, POLICY, n_bootstrap=200, seed=7)
    b = evaluate_policy(data, POLICY, n_bootstrap=200, seed=7)
    c = evaluate_policy(data, POLICY, n_bootstrap=200, seed=8)
    assert [e.as_dict() for e in a] == [e.as_dict() for e in b]
    assert [(e.lower, e.upper) for e in a] != [(e.lower, e.upper) for e in c]
    for e in a:
        assert e.lower <= e.upper


def test_on_policy_value_interval() -> None:
    reward = np.array([0.0] * 90 + [1.0] * 10)
    est = on_policy_value(reward, n_bootstrap=500, seed=1)
    assert est.value == pytest.approx(0.1)
    assert 0.03 < est.lower < 0.1 < est.upper < 0.2


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_propensity_out_of_range_names_row_and_column(bad: float) -> None:
    frame = LOGS.with_columns(pl.Series("propensity", [0.5, 0.5, bad, 0.5]))
    with pytest.raises(OffPolicyDataError, match=r"'propensity'.* at row 2.*\(0, 1\]"):
        logged_data(frame)


def test_missing_column_is_named() -> None:
    with pytest.raises(OffPolicyDataError, match=r"missing column.*'propensity'"):
        logged_data(LOGS.drop("propensity"))


def test_policy_not_summing_to_one_names_row_and_position() -> None:
    dist = np.broadcast_to(POLICY, (4, 2, 2)).copy()
    dist[3, 0, 1] = 0.3  # row 3, position 1 sums to 0.9
    with pytest.raises(OffPolicyDataError, match=r"row 3, position 1: .*sum to 0.9\b"):
        check_action_dist(dist)
    with pytest.raises(OffPolicyDataError, match="row 3, position 1"):
        evaluate_policy(logged_data(LOGS), dist)


def test_policy_shape_and_action_checks() -> None:
    data = logged_data(LOGS)
    with pytest.raises(OffPolicyDataError, match="3 rounds but the logs have 4 rows"):
        evaluate_policy(data, np.broadcast_to(POLICY, (3, 2, 2)).copy())
    with pytest.raises(OffPolicyDataError, match="action 1 at row 1 but the policy has 1 actions"):
        evaluate_policy(data, np.ones((1, 2)))


def test_policy_files(tmp_path) -> None:
    npy = tmp_path / "policy.npy"
    np.save(npy, POLICY)
    np.testing.assert_array_equal(load_action_dist(npy), POLICY)
    long = pl.DataFrame(
        {"action": [0, 1, 0, 1], "position": [0, 0, 1, 1], "probability": [0.8, 0.2, 0.4, 0.6]}
    )
    long.write_parquet(tmp_path / "policy.parquet")
    np.testing.assert_allclose(load_action_dist(tmp_path / "policy.parquet"), POLICY)
    per_round = long.with_columns(pl.lit(0).alias("round"))
    per_round.write_parquet(tmp_path / "round.parquet")
    with pytest.raises(OffPolicyDataError, match=r"row 1, position 0: .*sum to 0\b"):
        load_action_dist(tmp_path / "round.parquet", n_rounds=2)


def test_position_ctr_and_wilson() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.2 < hi < 0.35
    rows = position_ctr(np.array([2, 1, 1, 2]), np.array([1, 0, 1, 0]), np.full(4, 0.4))
    assert [r["position"] for r in rows] == ["1", "2"]
    assert rows[0]["ctr"] == 0.5 and rows[0]["shown"] == 2 and rows[0]["mean_pred"] == 0.4


def test_parquet_policy_duplicates_and_one_based_positions_are_named(tmp_path) -> None:
    """Duplicate (action, position) rows were summed (0.5 + 0.4 taken as 0.9), and a policy
    written with the logs' 1-based positions failed with 'position 0: ... sum to 0'."""
    import polars as pl

    path = tmp_path / "policy.parquet"
    pl.DataFrame({"action": [0, 0, 1], "position": [0, 0, 0],
                  "probability": [0.5, 0.4, 0.1]}).write_parquet(path)  # fmt: skip
    with pytest.raises(OffPolicyDataError, match=r"action 0, position 0 is given more than once"):
        load_action_dist(path)
    pl.DataFrame({"action": [0, 1, 0, 1], "position": [1, 1, 2, 2],
                  "probability": [0.5, 0.5, 0.5, 0.5]}).write_parquet(path)  # fmt: skip
    with pytest.raises(OffPolicyDataError, match=r"position 0: .*sum to 0.*0-based"):
        load_action_dist(path)
    dist = np.full((2, 1), 0.5)
    dist[0, 0] = np.float64("nan")
    with pytest.raises(OffPolicyDataError, match=r"probability nan is not in \[0, 1\]"):
        check_action_dist(dist)


def test_probability_on_actions_the_logs_never_show_is_warned(caplog, tmp_path) -> None:
    """A policy with 80 % of its mass on actions the men campaign never logged gave IPS
    0.27x and SNIPS 1.32x the logs' value, without a word."""
    from typer.testing import CliRunner

    from adrank.cli import app
    from adrank.ope import unlogged_share

    data = logged_data(LOGS)  # actions 0 and 1 logged
    wide = np.zeros((4, 2))  # two more actions, never logged
    wide[:2] = POLICY * 0.5
    wide[2:] = 0.25
    assert unlogged_share(data, wide) == pytest.approx(0.5)
    with caplog.at_level("WARNING", logger="adrank.ope"):
        evaluate_policy(data, wide, None, n_bootstrap=10)
    assert "50.0% of its probability" in caplog.text and "never show" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="adrank.ope"):
        evaluate_policy(data, POLICY, None, n_bootstrap=10)
    assert not caplog.records
    logs = tmp_path / "logs.parquet"
    LOGS.write_parquet(logs)
    np.save(tmp_path / "p.npy", POLICY)
    res = CliRunner().invoke(
        app, ["ope", str(logs), "--policy", str(tmp_path / "p.npy"), "--context-col", "x"]
    )
    assert res.exit_code != 0 and "--reward-model logistic only" in res.output
