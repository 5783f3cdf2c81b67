"""The streaming protocol on real MovieLens rows: chunking in time order, the 10 % holdout
by time, warm/cold flags, strategies over DeepFM and DCNv2, per-chunk run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adrank.artifact import load_artifact
from adrank.cli import app
from adrank.config import TrainConfig
from adrank.stream.protocol import StreamContext, StreamSettings, cut_chunks, load_stream
from adrank.stream.runner import run_stream
from adrank.stream.strategies import build_strategy

SMALL = {
    "deepfm": {"embedding_dim": 4, "hidden_units": [16], "net_dropout": 0.0},
    "dcnv2": {"embedding_dim": 4, "num_cross_layers": 1, "parallel_dnn_hidden_units": [16],
              "stacked_dnn_hidden_units": [16]},
}  # fmt: skip
TRAIN = TrainConfig(task="like", batch_size=256, num_threads=1, patience=1)


def test_cut_chunks_equal_rows_and_periods() -> None:
    frame = pl.DataFrame({"t": [0, 1, 2, 3, 10, 11, 30], "x": list("abcdefg")})
    sizes = [c.height for c in cut_chunks(frame, "t", chunks=3)]
    assert sizes == [2, 3, 2] and sum(sizes) == 7
    by_period = cut_chunks(frame, "t", period_s=10)
    assert [c["t"].to_list() for c in by_period] == [[0, 1, 2, 3], [10, 11], [30]]
    with pytest.raises(ValueError, match="not in 't' order"):
        cut_chunks(frame.reverse(), "t", chunks=2)
    with pytest.raises(KeyError, match="time column 'when'"):
        cut_chunks(frame, "when", chunks=2)


@pytest.fixture(scope="module")
def stream(data_dir: Path):
    schema, frame = load_stream("movielens_100k", data_dir)
    assert frame["timestamp"].is_sorted() and frame.height == 100_000
    return schema, cut_chunks(frame.head(6_000), "timestamp", chunks=3)


def test_holdout_is_the_last_tenth_by_time_and_warm_flags(stream) -> None:
    schema, chunks = stream
    ctx = StreamContext(schema, chunks, "deepfm", SMALL["deepfm"], TRAIN, StreamSettings(), 0)
    head, tail = ctx.split(1)
    assert (head.height, tail.height) == (1_800, 200)
    assert head["timestamp"].max() <= tail["timestamp"].min()
    flags = ctx.warm_flags(0)
    seen = set(chunks[0]["user_id"].to_list())
    expected = ["warm" if u in seen else "cold" for u in chunks[1]["user_id"].to_list()]
    assert flags.tolist() == expected and {"warm", "cold"} <= set(expected)


@pytest.mark.parametrize("model", ["deepfm", "dcnv2"])
def test_strategies_run_and_cost_what_they_train_on(stream, model: str, tmp_path: Path) -> None:
    schema, chunks = stream
    settings = StreamSettings(max_epochs=1)
    results = {}
    for strategy, options in (("full_retrain", None), ("sliding_window", {"window": 1}),
                              ("fine_tune", None)):  # fmt: skip
        out = tmp_path / strategy
        records = run_stream(
            schema, chunks, model, SMALL[model], TRAIN, strategy, options, settings, 0,
            dataset="movielens_100k", out=out, save="all",
        )  # fmt: skip
        assert [r["chunk"] for r in records] == [1, 2]
        assert all(0.5 < r["auc"] < 1 for r in records)
        assert all(r["warm_rows"] + r["cold_rows"] == r["rows"] for r in records)
        lines = (out / "records.jsonl").read_text().splitlines()
        assert [json.loads(line)["chunk"] for line in lines] == [1, 2]
        art = load_artifact(out / "chunk_001")  # a complete run directory
        assert art.config.model == model and (out / "chunk_001" / "growth.json").exists()
        assert art.manifest["stream"] == {"dataset": "movielens_100k", "chunk": 1,
                                          "strategy": strategy, "seed": 0,
                                          "servable": True}  # fmt: skip
        assert not art.config.dataset  # never re-scored on differently encoded splits
        results[strategy] = records
    # one epoch each: full retraining on chunk 1 trains on chunk 0 and 90 % of chunk 1
    assert results["full_retrain"][1]["compute"] == 2_000 + 1_800
    assert results["sliding_window"][1]["compute"] == 1_800
    assert results["fine_tune"][1]["compute"] == 1_800
    assert results["fine_tune"][1]["admitted"] > 0
    replayed = run_stream(schema, chunks, model, SMALL[model], TRAIN, "fine_tune",
                          {"replay": "0.5"}, settings, 0)  # fmt: skip
    assert replayed[1]["compute"] == 1_800 + 900  # half as many rows again, from chunk 0


def test_unknown_strategy_and_option_are_named() -> None:
    with pytest.raises(KeyError, match="unknown strategy 'nope'"):
        build_strategy("nope")
    with pytest.raises(ValueError, match="no option"):
        build_strategy("fine_tune", {"window": "3"})


def test_stream_command(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["stream", "--dataset", "movielens_100k", "--model", "dcnv2", "--strategy",
         "sliding_window", "--option", "window=1", "--chunks", "20", "--max-epochs", "1",
         "--set", "train.task=like", "--set", "train.num_threads=1",
         "--set", "params.embedding_dim=4", "--set", "params.parallel_dnn_hidden_units=[16]",
         "--out", str(tmp_path / "s"), "--save", "none", "--data-dir", str(data_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean next-chunk AUC" in result.output
    records = [json.loads(x) for x in (tmp_path / "s" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 19 and not list((tmp_path / "s").glob("chunk_*"))
    assert np.isfinite([r["auc"] for r in records]).all()


@pytest.mark.parametrize("strategy", ["data_driven_prior", "drift_ensemble"])
def test_runs_that_score_with_parts_they_do_not_hold_are_not_served(
    stream, strategy: str, tmp_path: Path
) -> None:
    """A data_driven_prior chunk lacks its feature-prior offsets and an ensemble chunk holds
    one member: the Predictor refuses them instead of serving other scores than measured."""
    from adrank.artifact import ArtifactError
    from adrank.serve.predictor import Predictor

    schema, chunks = stream
    out = tmp_path / strategy
    run_stream(
        schema, chunks, "deepfm", SMALL["deepfm"], TRAIN, strategy, None,
        StreamSettings(max_epochs=1), 0, dataset="movielens_100k", out=out, save="last",
    )  # fmt: skip
    art = load_artifact(out / "chunk_001")
    assert art.manifest["stream"]["servable"] is False
    with pytest.raises(ArtifactError, match=f"'{strategy}' stream model"):
        Predictor(art)
    from adrank.serve.model_store import StoreError, publish

    with pytest.raises(StoreError, match="not published"):
        publish(out / "chunk_001", tmp_path / "store")
