"""The metrics against independent references (brute-force pairwise AUC, per-group loops,
scikit-learn, equal-width binning written out) and their refusals of inputs that would
otherwise give a silent wrong number."""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from adrank.metrics import auc, calibration, evaluate_all, gauc, logloss
from adrank.train.evaluation import Predictions, compute_metrics, slice_metrics

FUNNEL = {
    "tasks": [
        {"name": "click", "label": "click"},
        {"name": "buy", "label": "buy", "given": "click"},
    ],
    "roles": {"group": "user", "domain": "site"},
    "features": [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"}],
}


def funnel_frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.5).astype(int)
    buy = click * (rng.random(n) < 0.5).astype(int)
    return pl.DataFrame(
        {
            "click": click,
            "buy": buy,
            "user": [f"u{i % 7}" for i in range(n)],
            "item": [f"i{i % 5}" for i in range(n)],
            "site": ["app" if i % 3 else "web" for i in range(n)],
        }
    )


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over all pairs."""
    y = np.asarray(y).astype(bool)
    pos, neg = np.asarray(s)[y][:, None], np.asarray(s)[~y][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def loop_gauc(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups with both classes."""
    num = den = 0.0
    for key in dict.fromkeys(g.tolist()):
        m = np.array([v == key for v in g.tolist()])
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * pairwise_auc(y[m], s[m])
            den += m.sum()
    return num / den


# --- AUC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auc_matches_pairwise_reference_with_ties(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for n, levels in [(7, 2), (200, 3), (500, 40)]:
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        s = (rng.integers(0, levels, n) / levels + 0.05 * y).astype(dtype)
        assert auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_ties_across_classes_and_all_equal_scores() -> None:
    assert auc([1, 0, 1, 0, 0], [0.4, 0.4, 0.4, 0.4, 0.4]) == 0.5
    # every positive ties every negative except one clean win
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.1])
    assert auc(y, s) == pairwise_auc(y, s) == 0.875


def test_auc_infinite_scores_rank_like_any_other_score() -> None:
    """Scores are any monotone transform (a logit of p = 1.0 is +inf): ±inf keep their order
    and tie with each other."""
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([-np.inf, np.inf, 0.2, 0.3, np.inf, np.inf])
    assert auc(y, s) == pairwise_auc(y, s)


def test_auc_one_class_raises() -> None:
    for y in ([0, 0, 0], [1, 1, 1], [True]):
        with pytest.raises(ValueError, match="both classes"):
            auc(y, np.linspace(0, 1, len(y)))


def test_auc_refuses_nan_scores_and_labels() -> None:
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1, 1], [0.1, np.nan, 0.3])
    for bad in (np.nan, np.inf, 0.5):
        with pytest.raises(ValueError, match="only 0 and 1"):
            auc([0, bad, 1], [0.1, 0.2, 0.3])


def test_auc_refuses_complex_scores() -> None:
    """Complex numbers sort lexicographically: a number, but not a ranking."""
    with pytest.raises(ValueError, match="real"):
        auc([0, 1], [2 + 0j, 1 + 1j])
    with pytest.raises(ValueError, match="real"):
        gauc([0, 1], [2 + 0j, 1 + 1j], [1, 1])


def test_metrics_refuse_multi_column_arrays() -> None:
    """(N, T) labels and probabilities of several tasks are not pooled into one number."""
    y = np.array([[0, 1], [1, 0], [1, 1]])
    p = np.array([[0.2, 0.6], [0.7, 0.4], [0.9, 0.8]])
    for metric in (auc, logloss, lambda a, b: calibration(a, b)):
        with pytest.raises(ValueError, match="1-D"):
            metric(y, p)
    with pytest.raises(ValueError, match="1-D"):
        gauc(y, p, np.ones((3, 2)))
    # a (N, 1) column is still one column
    assert auc(y[:, :1], p[:, 0]) == auc(y[:, 0], p[:, 0])


def test_auc_million_rows_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    y = rng.random(n) < 0.02
    s = np.round(rng.random(n) * 0.6 + 0.2 * y, 3).astype(np.float32)  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, s) == auc(y, s.astype(np.float64))  # float32 values are exact in float64


# --- logloss -----------------------------------------------------------------------------


def test_logloss_matches_reference_and_clips_at_documented_eps() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    p = rng.random(1000).clip(0.001, 0.999)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)
    # p = 0 and 1 are clipped to [1e-7, 1 - 1e-7]
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert logloss([1, 0], np.float32([0.0, 1.0])) == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert logloss([0, 1], [0.0, 1.0]) == pytest.approx(-math.log1p(-1e-7), rel=1e-9)
    assert logloss([1, 0], [0.0, 1.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-9)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, 1.5, -0.25])
def test_probability_metrics_refuse_values_outside_unit_interval(bad: float) -> None:
    """Clipping 1.5 or inf into [eps, 1 - eps] would turn a scoring bug into a number."""
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss([0, 1], [bad, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([0, 1], [bad, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_all([0, 1], [bad, 0.5])


# --- gAUC --------------------------------------------------------------------------------


def test_gauc_matches_impression_weighted_loop_for_unsorted_string_groups() -> None:
    rng = np.random.default_rng(3)
    n = 600
    g = np.array([f"user{i}" for i in rng.integers(0, 40, n)])  # unsorted, strings
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 5, n) / 5 + 0.2 * y  # ties inside groups
    assert gauc(y, s, g) == pytest.approx(loop_gauc(y, s, g), abs=1e-12)
    # the same groups as ints, floats and shuffled give the same number
    codes = np.unique(g, return_inverse=True)[1]
    assert gauc(y, s, codes) == pytest.approx(gauc(y, s, g), abs=1e-15)
    assert gauc(y, s, codes * 1.5) == pytest.approx(gauc(y, s, g), abs=1e-15)
    perm = rng.permutation(n)
    assert gauc(y[perm], s[perm], g[perm]) == pytest.approx(gauc(y, s, g), abs=1e-15)


def test_gauc_weights_groups_by_impressions_and_skips_one_class_groups() -> None:
    # a: 6 rows AUC 1; b: 2 rows AUC 0; c: 3 rows all negative (skipped, no weight)
    y = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.1, 0.9, 0.5, 0.5, 0.5]
    g = ["a"] * 6 + ["b"] * 2 + ["c"] * 3
    assert gauc(y, s, g) == pytest.approx(6 / 8)


def test_gauc_group_ids_with_missing_values() -> None:
    """A missing group id (None, NaN) belongs to no group, whatever the array's dtype."""
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, 0.8, 0.2, 0.6, 0.4])
    expected = gauc(y[:4], s[:4], [1, 1, 2, 2])  # (2 * 1.0 + 2 * 0.0) / 4
    assert expected == 0.5
    floats = np.array([1.0, 1.0, 2.0, 2.0, np.nan, np.nan])
    assert gauc(y, s, floats) == expected
    assert gauc(y, s, floats.astype(object)) == expected
    objects = np.array(["u1", "u1", "u2", "u2", None, None], dtype=object)
    assert gauc(y, s, objects) == expected
    mixed = np.array([1, 1, "u2", "u2", None, float("nan")], dtype=object)
    assert gauc(y, s, mixed) == expected


# --- calibration -------------------------------------------------------------------------


def reference_ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Equal-width bins [k/n, (k+1)/n), the last one closed at 1.0."""
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        m = (p >= lo) & ((p < hi) if k < n_bins - 1 else (p <= 1.0))
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return total


def test_calibration_matches_equal_width_reference() -> None:
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.random(5000) ** 3, [0.0, 1.0, 1.0, 0.25, 0.5, 0.75]])
    y = (rng.random(len(p)) < p).astype(int)
    for n_bins in (1, 4, 10, 15):
        cal = calibration(y, p, n_bins)
        assert cal["ece"] == pytest.approx(reference_ece(y, p, n_bins), abs=1e-12)
        assert sum(cal["bin_count"]) == len(p)
    cal = calibration([1, 1, 0], [1.0, 1.0, 0.0], n_bins=4)
    assert cal["bin_count"] == [1, 0, 0, 2]  # exactly 1.0 lands in the last bin
    assert math.isnan(cal["bin_pred"][1]) and math.isnan(cal["bin_obs"][2])  # empty bins
    assert cal["ece"] == 0.0 and cal["ratio"] == 1.0


def test_calibration_ratio_without_positives() -> None:
    assert calibration([0, 0], [0.1, 0.3])["ratio"] == math.inf
    assert math.isnan(calibration([0, 0], [0.0, 0.0])["ratio"])


@pytest.mark.parametrize("n_bins", [0, 2.5, True])
def test_calibration_n_bins_must_be_a_positive_int(n_bins: object) -> None:
    with pytest.raises(ValueError, match="n_bins"):
        calibration([0, 1], [0.2, 0.6], n_bins=n_bins)  # type: ignore[arg-type]


# --- slices ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def funnel_predictions() -> tuple[Predictions, object]:
    from adrank.data.processor import FeatureProcessor
    from adrank.data.schema import Schema

    frame = funnel_frame(240, seed=5)
    fm = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame).feature_map()
    labels = frame.select("click", "buy").to_numpy().astype(np.float32)
    rng = np.random.default_rng(6)
    pctr = np.clip(labels[:, 0] * 0.4 + rng.random(240) * 0.6, 0.01, 0.99)
    pcvr = np.clip(labels[:, 1] * 0.3 + rng.random(240) * 0.7, 0.01, 0.99)
    preds = Predictions(np.stack([pctr, pcvr], 1), labels, None, outputs=["pctr", "pcvr"])
    return preds, fm


def test_slices_with_missing_values_keep_every_row(funnel_predictions) -> None:
    preds, fm = funnel_predictions
    n = len(preds.labels)
    by = np.where(np.arange(n) % 4 == 0, np.nan, (np.arange(n) % 3).astype(float))
    slices = slice_metrics(preds, fm, by)
    assert sum(m["rows"] for k, m in slices.items() if k != "all") == n
    missing = by != by
    assert slices["nan"]["rows"] == missing.sum()
    assert slices["nan"]["click_auc"] == auc(preds.labels[missing, 0], preds.probs[missing, 0])
    objects = np.array([None if i % 5 == 0 else f"s{i % 2}" for i in range(n)], dtype=object)
    slices = slice_metrics(preds, fm, objects)
    assert {k: m["rows"] for k, m in slices.items()} == {
        "all": n, "s0": 96, "s1": 96, "None": 48
    }  # fmt: skip


def test_slice_named_all_does_not_replace_the_overall_metrics(funnel_predictions, caplog) -> None:
    preds, fm = funnel_predictions
    n = len(preds.labels)
    by = np.where(np.arange(n) < 60, "all", "rest")
    with caplog.at_level(logging.WARNING, logger="adrank.train.evaluation"):
        slices = slice_metrics(preds, fm, by)
    assert slices["all"]["rows"] == n
    assert slices["all"]["click_auc"] == compute_metrics(preds, fm)["click_auc"]
    renamed = [k for k in slices if k not in ("all", "rest")]
    assert len(renamed) == 1 and slices[renamed[0]]["rows"] == 60
    assert "all" in caplog.text
    # two values shown under one name stay two slices
    slices = slice_metrics(preds, fm, np.arange(n) % 2, values={0: "x", 1: "x"})
    assert sorted(m["rows"] for k, m in slices.items() if k != "all") == [n / 2, n / 2]


def test_slices_one_class_and_rows_sum(funnel_predictions) -> None:
    preds, fm = funnel_predictions
    clicked = preds.labels[:, 0].astype(int)
    slices = slice_metrics(preds, fm, clicked)
    assert slices["0"]["rows"] + slices["1"]["rows"] == len(clicked)
    assert math.isnan(slices["0"]["click_auc"]) and slices["0"]["buy_rows"] == 0
    assert math.isnan(slices["1"]["click_auc"])
    on = clicked == 1
    assert slices["1"]["buy_auc"] == auc(preds.labels[on, 1], preds.probs[on, 1])
    assert slices["1"]["click_logloss"] == pytest.approx(
        logloss(np.ones(on.sum()), preds.probs[on, 0])
    )


def test_legacy_compute_metrics_honours_rows() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (300, 1)).astype(np.float32)
    p = rng.random(300)
    preds = Predictions(p, y, None)
    rows = np.arange(300) < 120
    sub = compute_metrics(preds, None, rows=rows)
    assert sub["auc"] == auc(y[rows, 0], p[rows])
    assert sub["auc"] != compute_metrics(preds, None)["auc"]
    with pytest.raises(ValueError, match="rows"):
        compute_metrics(preds, None, rows=rows[:10])


def test_field_calibration_covers_missing_and_all_named_values(funnel_predictions) -> None:
    from adrank.plots import field_calibration

    preds, fm = funnel_predictions
    n = len(preds.labels)
    by = np.where(np.arange(n) % 4 == 0, "all", np.where(np.arange(n) % 3 == 0, None, "x"))
    by = by.astype(object)
    out = field_calibration(preds, fm, by)
    assert sum(v["rows"] for v in out["values"].values()) == n
    y, p = preds.labels[:, 0], preds.probs[:, 0]
    expected = sum(
        m.sum() * abs(p[m].mean() - y[m].mean())
        for m in (by == "all", by == "x", np.array([v is None for v in by]))
    )
    assert out["error"] == pytest.approx(expected / n, rel=1e-12)


def test_unprefixed_mean_does_not_depend_on_which_task_lacks_rows() -> None:
    """A task with no rows on a slice is left out of the mean over tasks, also when it is
    the dataset's first task."""
    from adrank.data.processor import FeatureProcessor
    from adrank.data.schema import Schema

    schema = dict(FUNNEL, tasks=FUNNEL["tasks"][::-1])  # buy (given click) first
    frame = funnel_frame(240, seed=8)
    fm = FeatureProcessor(Schema.from_dict(schema)).fit(frame).feature_map()
    labels = frame.select("click", "buy").to_numpy().astype(np.float32)
    rng = np.random.default_rng(9)
    p = np.clip(labels * 0.3 + rng.random((240, 2)) * 0.7, 0.01, 0.99)
    preds = Predictions(p, labels, None, outputs=["pctr", "pcvr"])
    by = (labels[:, 0] == 1) | (np.arange(240) % 2 == 0)  # False: no clicks, so no buy rows
    slices = slice_metrics(preds, fm, by)
    no_buy = slices["False"]
    assert no_buy["buy_rows"] == 0
    assert no_buy["logloss"] == no_buy["click_logloss"]
    assert math.isnan(no_buy["auc"])  # the click task has one class there
    assert no_buy["rows"] == (~by).sum()


def test_field_calibration_reports_the_chosen_tasks_own_ratio(funnel_predictions) -> None:
    """On a multi-task dataset the ratio was the unprefixed one (the mean over the tasks),
    and a conditional task's mean_pred/mean_obs were taken over all rows while its ratio
    came from its given rows."""
    from adrank.plots import field_calibration

    preds, fm = funnel_predictions
    n = len(preds.labels)
    by = np.where(np.arange(n) % 2 == 0, "a", "b").astype(object)
    click = field_calibration(preds, fm, by, task="click")["values"]["a"]
    rows = by == "a"
    y, p = preds.labels[rows, 0], preds.probs[rows, 0]
    assert click["ratio"] == pytest.approx(p.mean() / y.mean(), rel=1e-6)
    buy = field_calibration(preds, fm, by, task="buy")["values"]["a"]
    clicked = rows & (preds.labels[:, 0] == 1)
    assert buy["rows"] == clicked.sum()
    assert buy["mean_pred"] == pytest.approx(preds.probs[clicked, 1].mean())
    assert buy["mean_obs"] == pytest.approx(preds.labels[clicked, 1].mean())
    assert buy["ratio"] == pytest.approx(buy["mean_pred"] / buy["mean_obs"], rel=1e-6)
