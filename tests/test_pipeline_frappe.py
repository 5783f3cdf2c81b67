"""End to end on the real frappe data: prepare -> train -> artifact -> evaluate -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.config import RunConfig, TrainConfig
from adrank.data.datasets import get_dataset
from adrank.data.prepare import prepare_dataset
from adrank.pipeline import evaluate_run, train_run
from adrank.serve.artifact import ArtifactError, load_artifact, read_manifest
from adrank.serve.predictor import Predictor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frappe_run(data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    prepared = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    config = RunConfig(
        model="deepfm",
        dataset="frappe",
        params={"embedding_dim": 10, "hidden_units": [64, 64], "batch_norm": True},
        train=TrainConfig(max_epochs=2, embedding_regularizer=0.01, progress=False, seed=7),
    )
    run_dir = tmp_path_factory.mktemp("runs") / "deepfm"
    result = train_run(config, run_dir, prepared=prepared)
    return prepared, run_dir, result


def test_prepare_frappe_counts_and_cache(data_dir: Path, cache_dir: Path) -> None:
    first = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    assert {k: v.rows for k, v in first.stats.items()} == {
        "train": 202_026,
        "valid": 57_722,
        "test": 28_861,
    }
    for st in first.stats.values():
        assert st.positive_rate["label"] == pytest.approx(1 / 3, abs=1e-4)
    assert first.feature_map.num_fields == 10
    again = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    assert again.cached and again.directory == first.directory


def test_train_run_writes_complete_artifact(frappe_run) -> None:
    _, run_dir, result = frappe_run
    manifest = read_manifest(run_dir)
    assert manifest["model"] == "deepfm"
    for name in ("config.yaml", "schema.yaml", "model.pt", "metrics.json", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len([json.loads(x) for x in lines if '"epoch"' in x]) >= 2
    assert result.test["auc"] > 0.90  # two epochs of a small DeepFM already separate well
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["auc"] == pytest.approx(result.test["auc"])


def test_evaluate_reproduces_test_metrics(frappe_run, data_dir: Path, cache_dir: Path) -> None:
    _, run_dir, result = frappe_run
    metrics = evaluate_run(run_dir, "test", data_dir=data_dir, cache_dir=cache_dir)
    assert metrics["auc"] == pytest.approx(result.test["auc"], abs=1e-9)
    assert metrics["logloss"] == pytest.approx(result.test["logloss"], abs=1e-9)


def test_predictor_on_raw_rows_matches_trainer(frappe_run, data_dir: Path) -> None:
    _, run_dir, _ = frappe_run
    raw_test = get_dataset("frappe").build_splits(data_dir)["test"]
    expected = np.load(run_dir / "test_predictions.npy")
    predictor = Predictor.load(run_dir)
    got = predictor.predict(raw_test.drop("label"))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-6
    records = raw_test.head(5).drop("label").to_dicts()
    np.testing.assert_allclose(predictor.predict(records), expected[:5], atol=1e-6)


def test_artifact_load_errors(frappe_run, tmp_path: Path) -> None:
    _, run_dir, _ = frappe_run
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = (run_dir / "manifest.json").read_text()
    (broken / "manifest.json").write_text(
        manifest.replace('"format_version": 2', '"format_version": 9')
    )
    with pytest.raises(ArtifactError, match="format version 9"):
        load_artifact(broken)
    (broken / "manifest.json").write_text((run_dir / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="incomplete"):
        load_artifact(broken)


def test_cli_prepare_export_and_predict(
    frappe_run, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    _, run_dir, _ = frappe_run
    runner = CliRunner()
    env = {"ADRANK_DATA_DIR": str(data_dir), "ADRANK_CACHE_DIR": str(cache_dir)}
    res = runner.invoke(app, ["datasets", "prepare", "frappe"], env=env)
    assert res.exit_code == 0, res.output
    assert "202,026" in res.output and "0.3333" in res.output
    out = tmp_path / "export"
    res = runner.invoke(
        app, ["datasets", "export", "frappe", "--format", "csv", "--output", str(out)], env=env
    )
    assert res.exit_code == 0, res.output
    test_csv = pl.read_csv(out / "test.csv", infer_schema=False)
    assert test_csv.height == 28_861
    assert test_csv.columns == [
        "label", "user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
        "weather", "country", "city",
    ]  # fmt: skip
    scored = tmp_path / "scored.csv"
    res = runner.invoke(
        app, ["predict", str(run_dir), "--input", str(out / "test.csv"), "--output", str(scored)]
    )
    assert res.exit_code == 0, res.output
    pctr = pl.read_csv(scored)["pctr"].to_numpy()
    np.testing.assert_allclose(pctr, np.load(run_dir / "test_predictions.npy"), atol=1e-6)


def test_cli_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["datasets", "prepare", "no_such_dataset"])
    assert res.exit_code == 1
    assert "unknown" in res.output.lower() or "available" in res.output.lower()
    res = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(app, ["train", "--dataset", "frappe", "--model", "nope"])
    assert res.exit_code == 1 and "unknown model" in res.output
