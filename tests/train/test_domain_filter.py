"""Per-domain baselines and per-domain test metrics: ``train.domain_filter`` trains,
validates and tests on one domain's rows; a run on data with a ``domain`` role writes
``test_by_domain`` to metrics.json, and the benchmark reads it as ``METRIC@DOMAIN``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adrank.bench.runner import _read_finished
from adrank.cli import app
from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.pipeline import train_run
from tests.serve.test_domain_serving import SCHEMA, _frame


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    splits = {name: _frame(n, seed) for name, n, seed in
              (("train", 2000, 1), ("valid", 500, 2), ("test", 600, 3))}  # fmt: skip
    return prepare_frames(SCHEMA, splits, tmp_path_factory.mktemp("domains") / "prepared"), splits


def _config(model: str, domain: str | None = None) -> RunConfig:
    train = TrainConfig(max_epochs=1, batch_size=256, progress=False, seed=0, num_threads=1,
                        domain_filter=domain)  # fmt: skip
    return RunConfig(model=model, params={"embedding_dim": 4}, train=train)


def test_pooled_run_reports_every_domain_and_the_benchmark_reads_them(
    prepared, tmp_path: Path
) -> None:
    data, splits = prepared
    train_run(_config("star"), tmp_path / "star", prepared=data)
    metrics = json.loads((tmp_path / "star" / "metrics.json").read_text())
    by_domain = metrics["test_by_domain"]
    counts = dict(splits["test"]["scenario"].value_counts().iter_rows())
    assert {d: int(m["rows"]) for d, m in by_domain.items()} == counts
    assert all({"auc", "logloss"} <= set(m) for m in by_domain.values())
    row = _read_finished(tmp_path / "star", "star", 0)
    assert row is not None and row.metrics["auc@feed"] == by_domain["feed"]["auc"]
    assert row.metrics["auc"] == metrics["test"]["auc"]
    # adrank evaluate: AUC, logloss and gAUC per domain next to the overall figures
    res = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "star"), "--slice-by", "domain"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if "slice" in line)
    assert all(col in header for col in ("auc", "logloss", "gauc"))
    error = next(line for line in res.output.splitlines() if "field-level calibration" in line)
    assert "nan" not in error  # the role's slices are matched by their names
    for domain in ("all", "feed", "search", "detail"):
        assert any(line.split("│")[1].strip() == domain for line in res.output.splitlines()
                   if "│" in line), domain  # fmt: skip


def test_domain_filter_trains_and_tests_on_one_domain(prepared, tmp_path: Path) -> None:
    data, splits = prepared
    train_run(_config("dnn", "search"), tmp_path / "dnn", prepared=data)
    metrics = json.loads((tmp_path / "dnn" / "metrics.json").read_text())
    n_search = splits["test"].filter(splits["test"]["scenario"] == "search").height
    assert list(metrics["test_by_domain"]) == ["search"]
    assert metrics["test_by_domain"]["search"]["rows"] == n_search
    assert metrics["test"]["auc"] == pytest.approx(metrics["test_by_domain"]["search"]["auc"])
    with pytest.raises(ValueError, match=r"'nowhere' is not a domain.*'feed'"):
        train_run(_config("dnn", "nowhere"), tmp_path / "bad", prepared=data)


def test_benchmark_leaderboard_has_per_domain_columns(prepared, tmp_path: Path) -> None:
    from adrank.bench.report import write_report
    from adrank.bench.runner import run_benchmark

    data, _ = prepared
    overrides = ["train.max_epochs=1", "train.num_threads=1", "train.progress=false",
                 "train.batch_size=256", "params.embedding_dim=4"]  # fmt: skip
    runs = run_benchmark("synthetic_scenarios", ["star", "dnn"], [1, 2], tmp_path / "bench",
                         overrides=overrides, prepared=data)  # fmt: skip
    assert {r.model for r in runs} == {"star", "dnn"}
    write_report(runs, "synthetic_scenarios", tmp_path / "bench", data.feature_map.tasks)
    md = (tmp_path / "bench" / "leaderboard.md").read_text()
    part = md.split("## Per domain", 1)[1]
    header = next(line for line in part.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[2:] == ["all AUC", "feed AUC", "search AUC", "detail AUC |"]
    star = next(line for line in part.splitlines() if line.startswith("| star | 2 |"))
    mean = np.mean([r.metrics["auc@search"] for r in runs if r.model == "star"])
    assert f"{mean:.4f} ± " in star.split(" | ")[4]


def test_a_domain_filter_read_as_a_number_is_a_clear_error() -> None:
    from adrank.config import ConfigError

    with pytest.raises(ConfigError, match=r"domain_filter must be str \| None, got 2534.*quote"):
        _config("dnn").with_overrides(["train.domain_filter=25_34"])  # YAML: the int 2534
    assert _config("dnn").with_overrides(["train.domain_filter=25_to_34"]).train.domain_filter


@pytest.mark.integration
def test_star_smoke_on_the_ali_ccp_samples_scenario_field(data_dir: Path, tmp_path: Path) -> None:
    """Smoke test only (100/50/50 rows): Ali-CCP's field ``301`` (the scenario, as in
    Scenario-Wise-Rec) as the domain of STAR, on the click task."""
    import dataclasses

    from adrank.data.datasets import get_dataset
    from adrank.data.schema import Task

    builder = get_dataset("ali_ccp")
    if builder.missing_files(data_dir):
        pytest.skip("ali_ccp sample files are absent")
    base = builder.schema()
    schema = dataclasses.replace(base, tasks=(Task("click", "click"),), labels=("click",),
                                 roles={"domain": "301"}, name="ali_ccp_scenarios")  # fmt: skip
    splits = {k: v.drop("purchase") for k, v in builder.build_splits(data_dir).items()}
    data = prepare_frames(schema, splits, tmp_path / "prepared")
    train_run(_config("star"), tmp_path / "star", prepared=data)
    metrics = json.loads((tmp_path / "star" / "metrics.json").read_text())
    scenarios = {str(v) for v in splits["test"]["301"].unique().to_list()}
    assert set(metrics["test_by_domain"]) <= scenarios | {"unknown"}
    assert sum(m["rows"] for m in metrics["test_by_domain"].values()) == splits["test"].height


def test_a_domain_called_unknown_keeps_its_own_slice() -> None:
    from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo
    from adrank.train.evaluation import role_value_names

    roles = {"domain": RoleInfo("domain", "__domain__", "vocab", "homework",
                                ("unknown", "home", "work"))}  # fmt: skip
    fmap = FeatureMap((FieldInfo("homework", "categorical", 5),), ("click",), roles=roles)
    assert role_value_names(fmap, "domain") == {0: "(unseen)", 1: "unknown", 2: "home",
                                                3: "work"}  # fmt: skip
    assert role_value_names(fmap, "group") is None
