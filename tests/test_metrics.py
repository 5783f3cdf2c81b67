from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from adrank.metrics import auc, calibration, evaluate_all, gauc, logloss


def test_auc_hand_cases() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    # pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.35, 0.1) win, (0.35, 0.4) loss
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_ties_count_half() -> None:
    # pos scores {0.5, 0.9}, neg scores {0.5, 0.1}: pairs 0.5 vs 0.5 tie (0.5), others win.
    assert auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(3.5 / 4)
    assert auc([1, 0, 0, 1, 0], [0.3] * 5) == 0.5


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for n, levels in [(50, 5), (1000, 30), (20_000, 1000)]:
        y = rng.integers(0, 2, n)
        s = rng.integers(0, levels, n) / levels + 0.1 * y
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_accepts_float_and_bool_labels() -> None:
    s = [0.2, 0.7, 0.4]
    assert auc(np.array([0.0, 1.0, 1.0], dtype=np.float32), s) == auc([False, True, True], s)


def test_auc_single_class_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only 0 and 1"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])


def test_logloss_hand_case_and_sklearn() -> None:
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    # clipping keeps it finite
    assert math.isfinite(logloss([1, 0], [0.0, 1.0]))
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    p = np.round(rng.random(5000), 2).clip(0.01, 0.99)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_gauc_hand_case() -> None:
    # group a: 4 rows, AUC 0.75; group b: 2 rows, AUC 0.0; group c: one class only (skipped)
    y = [0, 0, 1, 1, 1, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.6]
    g = ["a", "a", "a", "a", "b", "b", "c", "c"]
    assert gauc(y, s, g) == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)


def test_gauc_matches_per_group_loop_with_ties() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    g = rng.integers(0, 60, n)
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 8, n) / 8 + 0.2 * y
    num = den = 0.0
    for key in np.unique(g):
        m = g == key
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * roc_auc_score(y[m], s[m])
            den += m.sum()
    assert gauc(y, s, g) == pytest.approx(num / den, abs=1e-12)


def test_gauc_no_valid_group_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        gauc([1, 0], [0.3, 0.4], [1, 2])


def test_calibration_hand_case() -> None:
    # bin 1 [0.1, 0.2): preds 0.1, 0.1, labels 0, 1
    # bin 8 [0.8, 0.9): preds 0.8, 0.8, labels 1, 1
    y = [0, 1, 1, 1]
    p = [0.1, 0.1, 0.8, 0.8]
    cal = calibration(y, p, n_bins=10)
    assert cal["ratio"] == pytest.approx(0.45 / 0.75)
    # |0.1 - 0.5| * 2/4 + |0.8 - 1.0| * 2/4
    assert cal["ece"] == pytest.approx(0.4 * 0.5 + 0.2 * 0.5)
    assert cal["bin_count"] == [0, 2, 0, 0, 0, 0, 0, 0, 2, 0]
    assert cal["bin_obs"][8] == pytest.approx(1.0)
    assert math.isnan(cal["bin_pred"][0])


def test_calibration_perfect_is_zero_ece() -> None:
    cal = calibration([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5])
    assert cal["ratio"] == pytest.approx(1.0)
    assert cal["ece"] == pytest.approx(0.0)


def test_evaluate_all_keys() -> None:
    y = [0, 1, 1, 0, 1, 0]
    p = [0.2, 0.7, 0.6, 0.3, 0.4, 0.5]
    out = evaluate_all(y, p)
    assert set(out) == {"auc", "logloss", "calibration_ratio", "ece"}
    out = evaluate_all(y, p, groups=[1, 1, 1, 2, 2, 2])
    assert set(out) == {"auc", "logloss", "gauc", "calibration_ratio", "ece"}
    assert out["auc"] == pytest.approx(roc_auc_score(y, p))
    assert all(isinstance(v, float) for v in out.values())
