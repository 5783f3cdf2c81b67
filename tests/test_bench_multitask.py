"""Multi-task benchmark: per-task baselines (``model@task``, CTCVR as the product of the
two runs), multi-task rows, the leaderboard's per-task columns; on a tiny synthetic funnel
with 1-epoch runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.artifact import load_split
from adrank.bench.report import aggregate, headline_metrics, to_markdown, write_report
from adrank.bench.runner import (
    BenchmarkRun,
    plan_entries,
    read_results,
    run_benchmark,
    split_spec,
)
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.schema import Schema
from adrank.metrics import auc
from adrank.models import available_models

SCHEMA = {
    "name": "tiny_funnel",
    "tasks": [
        {"name": "click", "label": "click"},
        {"name": "engaged", "label": "engaged", "given": "click"},
    ],
    "roles": {"group": "user"},
    "features": [
        {"name": "user", "type": "categorical"},
        {"name": "item", "type": "categorical"},
        {"name": "hour", "type": "categorical"},
    ],
}
QUICK = [
    "train.max_epochs=1",
    "train.batch_size=64",
    "train.num_threads=1",
    "params.embedding_dim=4",
]


def funnel_split(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    user, item, hour = rng.integers(0, 12, n), rng.integers(0, 9, n), rng.integers(0, 4, n)
    click = (rng.random(n) < 0.2 + 0.5 * (item % 3 == 0)).astype(int)
    engaged = click * (rng.random(n) < 0.2 + 0.6 * (user % 2 == 0)).astype(int)
    return pl.DataFrame(
        {
            "click": click,
            "engaged": engaged,
            "user": [f"u{u}" for u in user],
            "item": [f"i{i}" for i in item],
            "hour": [f"h{h}" for h in hour],
        }
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    splits = {name: funnel_split(300, seed) for seed, name in enumerate(("train", "valid", "test"))}
    out = tmp_path_factory.mktemp("tiny-funnel") / "prepared"
    return prepare_frames(Schema.from_dict(SCHEMA), splits, out)


def test_specs_and_plan_expand_single_task_models_per_task(prepared: PreparedData) -> None:
    tasks = prepared.feature_map.tasks
    assert split_spec("dnn@click") == ("dnn", "click") and split_spec("dnn") == ("dnn", None)
    with pytest.raises(ValueError, match="MODEL@TASK"):
        split_spec("dnn@")
    entries = plan_entries(["esmm", "dnn", "deepfm@click"], tasks, lambda m: m != "esmm")
    assert [(e.name, e.parts) for e in entries] == [
        ("esmm", ()),
        ("dnn (per task)", ("dnn@click", "dnn@engaged")),
        ("deepfm@click", ()),
    ]
    with pytest.raises(ValueError, match="unknown task 'buy'"):
        plan_entries(["dnn@buy"], tasks, lambda m: True)
    single = plan_entries(["dnn"], tasks[:1], lambda m: True)
    assert [(e.name, e.parts) for e in single] == [("dnn", ())]


@pytest.fixture(scope="module")
def benchmark(
    prepared: PreparedData, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[BenchmarkRun]]:
    models = ["dnn"] + [m for m in ("sharebottom",) if m in available_models()]
    out = tmp_path_factory.mktemp("bench")
    rows = run_benchmark("tiny_funnel", models, [2021], out, overrides=QUICK, prepared=prepared)
    return out, rows


def test_per_task_baseline_pair_scores_ctcvr_as_the_product(
    prepared: PreparedData, benchmark: tuple[Path, list[BenchmarkRun]]
) -> None:
    out, rows = benchmark
    by_model = {r.model: r for r in rows}
    click, engaged, pair = (
        by_model["dnn@click"],
        by_model["dnn@engaged"],
        by_model["dnn (per task)"],
    )
    assert (click.task, engaged.task, pair.task) == ("click", "engaged", None)
    assert pair.parts == ["dnn@click", "dnn@engaged"] and pair.embedding_dim == 4
    assert pair.num_parameters == click.num_parameters + engaged.num_parameters
    # the pair keeps its parts' threads and the slowest pace either part trained at
    assert pair.threads == click.threads and pair.threads is not None
    assert pair.speed_index == min(click.speed_index or 0.0, engaged.speed_index or 0.0) > 0

    labels = load_split(prepared, "test").data.labels.numpy()
    pctr = np.load(Path(click.run_dir) / "test_predictions.npy")
    pcvr = np.load(Path(engaged.run_dir) / "test_predictions.npy")
    clicked = labels[:, 0] == 1
    assert pair.metrics["click_auc"] == pytest.approx(auc(labels[:, 0], pctr))
    assert pair.metrics["engaged_auc"] == pytest.approx(auc(labels[clicked, 1], pcvr[clicked]))
    ctcvr = auc(labels[:, 0] * labels[:, 1], pctr * pcvr)
    assert pair.metrics["pctcvr_auc"] == pytest.approx(ctcvr)
    assert "click_gauc" in pair.metrics  # the dataset has a group role
    # each part's own metrics: its task only, conversion scored on clicked rows
    assert click.metrics["click_auc"] == pytest.approx(pair.metrics["click_auc"])
    assert engaged.metrics["engaged_auc"] == pytest.approx(pair.metrics["engaged_auc"])
    assert "pctcvr_auc" not in engaged.metrics

    recorded = read_results(out / "runs.jsonl")
    assert recorded[("dnn (per task)", 2021)] == pair
    assert recorded[("dnn@engaged", 2021)].task == "engaged"


def test_benchmark_resumes_without_retraining(
    prepared: PreparedData, benchmark: tuple[Path, list[BenchmarkRun]]
) -> None:
    out, _ = benchmark
    before = (out / "runs.jsonl").read_text()
    again = run_benchmark("tiny_funnel", ["dnn"], [2021], out, overrides=QUICK, prepared=prepared)
    assert (out / "runs.jsonl").read_text() == before
    assert [r.model for r in again] == ["dnn@click", "dnn@engaged", "dnn (per task)"]


@pytest.mark.skipif("sharebottom" not in available_models(), reason="sharebottom not registered")
def test_multi_task_model_row_has_per_task_metrics(
    benchmark: tuple[Path, list[BenchmarkRun]],
) -> None:
    _, rows = benchmark
    row = next(r for r in rows if r.model == "sharebottom")
    assert row.task is None and not row.parts and row.embedding_dim == 4
    assert {"click_auc", "engaged_auc", "pctcvr_auc", "click_logloss"} <= set(row.metrics)
    assert row.test_auc == pytest.approx(
        (row.metrics["click_auc"] + row.metrics["engaged_auc"]) / 2
    )


def test_leaderboard_has_per_task_columns(
    prepared: PreparedData, benchmark: tuple[Path, list[BenchmarkRun]], tmp_path: Path
) -> None:
    _, rows = benchmark
    headlines = headline_metrics(rows, prepared.feature_map.tasks)
    assert [h.key for h in headlines] == ["click", "engaged", "pctcvr"]
    assert "CVR on click=1 rows" in headlines[1].title
    # without the feature map the columns come from the recorded metric names
    assert [h.key for h in headline_metrics(rows)] == ["click", "engaged", "pctcvr"]

    board = aggregate(rows, "tiny_funnel")
    md = to_markdown(board, "tiny_funnel", headlines=headlines)
    assert "| dnn (per task) | 1 |" in md
    assert "dnn@click" not in md.split("## ")[0].split("|---")[1]  # parts are folded in
    assert "click AUC" in md and "CTCVR AUC" in md and "click gAUC" in md
    assert "embedding dim" in md and "one config per model" in md
    pair = next(r for r in board if r.model == "dnn (per task)")
    assert f"{pair.metrics['pctcvr_auc'][0]:.4f}" in md

    write_report(rows, "tiny_funnel", tmp_path, tasks=prepared.feature_map.tasks)
    csv = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert "pctcvr_auc_mean" in csv[0].split(",")
    assert (tmp_path / "leaderboard.png").stat().st_size > 0


def test_old_rows_load_and_unknown_fields_are_named(tmp_path: Path) -> None:
    old = {
        "model": "dnn",
        "seed": 2021,
        "test_auc": 0.9,
        "test_logloss": 0.3,
        "valid_auc": 0.9,
        "num_parameters": 10,
        "epochs": 2,
        "best_epoch": 1,
        "train_time_s": 1.0,
        "train_samples_per_s": 5.0,
        "run_dir": "x",
    }
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(old) + "\n")
    row = read_results(path)[("dnn", 2021)]
    assert row.task is None and row.metrics == {} and row.parts == [] and row.code == ""
    path.write_text(json.dumps(old | {"colour": 1}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: unknown field\(s\) \['colour'\]"):
        read_results(path)


def test_cli_report_only_rebuilds_the_multitask_leaderboard(
    benchmark: tuple[Path, list[BenchmarkRun]], tmp_path: Path
) -> None:
    import shutil

    from typer.testing import CliRunner

    from adrank.cli import app

    out = tmp_path / "copy"
    shutil.copytree(benchmark[0], out)
    args = ["benchmark", "--dataset", "tiny_funnel", "--models", "dnn", "--report-only"]
    result = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "leaderboard.md").read_text()
    # an unregistered dataset: the columns come from the recorded metric names
    assert "| dnn (per task) | 1 |" in md and "CTCVR AUC" in md and "sharebottom" not in md
    args[4] = "nosuch@click"
    unknown = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert unknown.exit_code != 0 and "unknown model(s) ['nosuch@click']" in unknown.output
