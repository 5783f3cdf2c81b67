"""Calibration: PAV and Platt against hand cases and scikit-learn; calibrating a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adrank.serve.artifact import load_artifact, read_manifest, save_calibration
from adrank.serve.calibration import (
    OUTPUT_EPS,
    apply_calibration,
    calibrate,
    fit_calibration,
    fit_isotonic,
    fit_platt,
    pool_adjacent_violators,
)
from adrank.serve.predictor import Predictor


def test_pav_hand_cases() -> None:
    np.testing.assert_allclose(
        pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0]), np.ones(4)), [1, 2.5, 2.5, 4]
    )
    # weighted: (3*1 + 1*3) / 4 = 1.5 > 0, so the last point pools too: 6 / 8 = 0.75
    np.testing.assert_allclose(
        pool_adjacent_violators(np.array([3.0, 1.0, 0.0]), np.array([1.0, 3.0, 4.0])),
        [0.75, 0.75, 0.75],
    )
    np.testing.assert_allclose(
        pool_adjacent_violators(np.array([3.0, 1.0, 5.0]), np.array([1.0, 3.0, 4.0])),
        [1.5, 1.5, 5.0],
    )
    np.testing.assert_allclose(pool_adjacent_violators(np.array([5.0]), np.ones(1)), [5.0])


def test_isotonic_matches_sklearn() -> None:
    sklearn_isotonic = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(0)
    p = np.round(rng.beta(2, 5, 5000), 3)  # with ties
    y = (rng.random(5000) < np.clip(1.5 * p, 0, 1)).astype(np.float64)
    ours = fit_isotonic(p, y)
    ref = sklearn_isotonic.IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    ref.fit(p, y)
    grid = np.concatenate([p, np.linspace(-0.1, 1.1, 1001)])
    np.testing.assert_allclose(np.interp(grid, ours["x"], ours["y"]), ref.predict(grid), atol=1e-12)
    assert np.all(np.diff(ours["y"]) >= 0) and len(ours["x"]) < 1001


def test_platt_recovers_parameters_and_matches_sklearn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 100_000)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(np.float64)
    fit = fit_platt(p, y)
    assert fit["a"] == pytest.approx(2.0, abs=0.05) and fit["b"] == pytest.approx(-1.0, abs=0.05)
    ref = linear_model.LogisticRegression(C=1e10, tol=1e-10, max_iter=1000).fit(z[:, None], y)
    assert fit["a"] == pytest.approx(ref.coef_[0, 0], abs=1e-4)
    assert fit["b"] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_calibrated_outputs_never_reach_zero_or_one() -> None:
    cal = fit_calibration(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), ["click"])
    assert cal["maps"]["click"]["y"] == [0.0, 0.0, 1.0, 1.0]
    out = apply_calibration(cal, np.array([0.05, 0.15, 0.95]))
    np.testing.assert_allclose(out, [OUTPUT_EPS, OUTPUT_EPS, 1 - OUTPUT_EPS])


def test_apply_multi_task_and_errors() -> None:
    p = np.array([[0.1, 0.8], [0.5, 0.2]])
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    cal = fit_calibration(p, y, ["click", "conv"], "platt")
    out = apply_calibration(cal, p)
    assert out.shape == (2, 2)
    with pytest.raises(ValueError, match="2 outputs but probs are 1-D"):
        apply_calibration(cal, p[:, 0])
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration(p, y, ["click", "conv"], "beta")


def test_isotonic_on_few_rows_of_a_class_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Isotonic fitted on 87 clicked rows sent 9.9 % of a user's test rows to pcvr=1e-6
    without a word: a class with fewer than 50 rows gets a warning suggesting platt."""
    rng = np.random.default_rng(0)
    p = rng.random(87)
    y = (rng.random(87) < 0.1).astype(float)
    with caplog.at_level("WARNING", logger="adrank.serve.calibration"):
        fit_calibration(p, y, ["pcvr"], "isotonic")
    (record,) = caplog.records
    assert f"'pcvr' is fitted on 87 rows ({int(y.sum())} positive)" in record.getMessage()
    assert "platt" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="adrank.serve.calibration"):
        fit_calibration(p, y, ["pcvr"], "platt")  # two parameters: no warning
        big = rng.random(2_000)
        fit_calibration(big, (rng.random(2_000) < big).astype(float), ["pctr"], "isotonic")
    assert not caplog.records


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_one_class_fitting_rows_are_refused(method: str) -> None:
    """Isotonic on all-negative rows maps every prediction to 0 (and test ECE went up from
    0.144 to 0.338 on such a run, stored without a word): refused, naming the output."""
    p = np.array([0.1, 0.4, 0.7])
    with pytest.raises(ValueError, match=r"'pctr': all 3 rows .* are negative.*both classes"):
        fit_calibration(p, np.zeros(3), ["pctr"], method)
    with pytest.raises(ValueError, match=r"are positive.*every prediction to 1"):
        fit_calibration(p, np.ones(3), ["pctr"], method)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrate_run_stores_map_and_predictor_applies_it(
    synthetic_runs, tmp_path: Path, method: str
) -> None:
    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    raw = Predictor.load(run)
    report = calibrate(run, method)
    assert report.rows == 2000 and set(report.splits) == {"valid", "test"}
    valid = report.splits["valid"]
    assert valid["after"]["ece"] < valid["before"]["ece"]
    assert abs(valid["after"]["ratio"] - 1) <= abs(valid["before"]["ratio"] - 1) + 1e-3
    manifest = read_manifest(run)
    assert manifest["calibration"] == "calibration.json" and "calibration.json" in manifest["files"]
    assert manifest["calibration_method"] == method
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["method"] == method and stored["fitted_on"] == "valid"
    calibrated = Predictor.load(run)
    assert calibrated.version != raw.version  # the served scores changed
    records = synthetic_runs.raw_test.drop("click").head(50).to_dicts()
    np.testing.assert_allclose(
        calibrated.predict(records), apply_calibration(stored, raw.predict(records)), atol=1e-12
    )
    assert load_artifact(run).calibration == stored


def test_calibration_format_is_checked(synthetic_runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    calibrate(run, "platt")
    stored = json.loads((run / "calibration.json").read_text())
    (run / "calibration.json").write_text(json.dumps({**stored, "version": 99}))
    with pytest.raises(RuntimeError, match="calibration format version 99"):
        load_artifact(run)
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate(run, "beta")


def test_format_1_calibration_file_still_loads(synthetic_runs, tmp_path: Path) -> None:
    """A single-map file of the first format is the map of the run's single output."""
    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    records = synthetic_runs.raw_test.drop("click").head(20).to_dicts()
    raw = Predictor.load(run).predict(records)
    v1 = {
        "version": 1,
        "method": "platt",
        "labels": ["click"],
        "maps": {"click": {"a": 2.0, "b": -0.5}},
    }
    save_calibration(run, v1)
    predictor = Predictor.load(run)
    assert predictor.calibration is not None and set(predictor.calibration["maps"]) == {"pctr"}
    z = 2.0 * np.log(raw / (1 - raw)) - 0.5
    np.testing.assert_allclose(predictor.predict(records), 1 / (1 + np.exp(-z)), rtol=1e-9)
    assert predictor.predict_outputs(records).keys() == {"pctr"}


def test_calibrate_single_task_stores_format_2(synthetic_runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    report = calibrate(run, "platt")
    stored = json.loads((run / "calibration.json").read_text())
    assert stored["version"] == 2 and stored["outputs"] == ["pctr"]
    assert stored["fitted_rows"] == {"pctr": 2000} and report.derived == []
    assert report.splits["valid"]["before"]["rows"] == 2000


@pytest.mark.integration
def test_calibrate_frappe_improves_ece(frappe_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(frappe_run, tmp_path / "frappe"))
    report = calibrate(run, "isotonic")
    assert report.rows == 57_722
    for split in ("valid", "test"):
        before, after = report.splits[split]["before"], report.splits[split]["after"]
        assert after["ece"] < before["ece"] / 2, (split, before, after)
        assert abs(after["ratio"] - 1) < 0.02


def test_evaluate_says_which_scores_it_reports_and_calibrated_matches_calibrate(
    synthetic_runs, tmp_path: Path
) -> None:
    """`adrank evaluate` on a calibrated run reported the uncalibrated scores (pred/obs
    0.98 where calibrate said 1.19 on the same split) without a word; it now says so, and
    --calibrated gives the served scores: calibrate's own "after" numbers."""
    from typer.testing import CliRunner

    from adrank.cli import app

    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(run), "--calibrated"])
    assert res.exit_code == 1 and "run `adrank calibrate" in res.output
    report = calibrate(run, "isotonic")
    raw = runner.invoke(app, ["evaluate", str(run), "--json"])
    cal = runner.invoke(app, ["evaluate", str(run), "--json", "--calibrated"])
    assert raw.exit_code == 0 and cal.exit_code == 0, raw.output + cal.output
    before = json.loads(raw.output)["metrics"]
    after = json.loads(cal.output)["metrics"]
    test = report.splits["test"]
    assert before["ece"] == pytest.approx(test["before"]["ece"], abs=1e-9)
    assert after["ece"] == pytest.approx(test["after"]["ece"], abs=1e-9)
    assert after["ece"] != before["ece"]
    text = runner.invoke(app, ["evaluate", str(run)]).output
    assert "scores before the run's isotonic calibration" in text
