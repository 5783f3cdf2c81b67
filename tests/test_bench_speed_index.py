"""The machine speed index: a fixed reference workload timed just before each benchmark run,
so time columns from different machines (or a busy one) can be put on one scale."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import torch

from adrank.bench.provenance import speed_index
from adrank.bench.report import aggregate, to_csv, to_markdown
from adrank.bench.runner import BenchmarkRun, read_results


def run(model: str, seed: int, index: float | None) -> BenchmarkRun:
    return BenchmarkRun(
        model=model, seed=seed, test_auc=0.98, test_logloss=0.15, valid_auc=0.98,
        num_parameters=10, epochs=3, best_epoch=2, train_time_s=100.0,
        train_samples_per_s=5000.0, run_dir="", speed_index=index,
    )  # fmt: skip


def test_index_is_a_positive_rate_that_leaves_rng_and_threads_alone() -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    state = torch.get_rng_state()
    value = speed_index(1, repeats=2, steps=2)
    assert math.isfinite(value) and value > 0
    assert torch.equal(torch.get_rng_state(), state)  # the run's seeded stream is untouched
    assert torch.get_num_threads() == threads  # restored after timing at 1 thread
    assert torch.is_grad_enabled()  # grad mode restored
    with torch.no_grad():  # works inside an inference context too
        assert speed_index(None, repeats=1, steps=1) > 0
        assert not torch.is_grad_enabled()


def test_rows_round_trip_and_old_rows_read_without_an_index(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    old = {k: v for k, v in dataclasses.asdict(run("lr", 2021, None)).items()
           if k != "speed_index"}  # fmt: skip
    path.write_text(
        json.dumps(old) + "\n" + json.dumps(dataclasses.asdict(run("dnn", 2021, 41.5))) + "\n"
    )
    rows = read_results(path)
    assert rows[("lr", 2021)].speed_index is None
    assert rows[("dnn", 2021)].speed_index == 41.5


def test_leaderboard_states_the_range_and_the_csv_carries_the_mean() -> None:
    runs = [run("dnn", 2021, 40.0), run("dnn", 2022, 44.0), run("deepfm", 2021, 20.0),
            run("lr", 2021, None)]  # fmt: skip
    rows = aggregate(runs, "frappe")
    by_model = {r.model: r for r in rows}
    assert by_model["dnn"].speed_index == 42.0 and by_model["lr"].speed_index is None
    text = to_markdown(rows, "frappe")
    assert "Speed index (reference MLP steps/s" in text
    assert "20.0 (deepfm) to 42.0 (dnn), 2 of 3 rows timed" in text
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert {r["model"]: r["speed_index"] for r in table} == {"dnn": "42.0", "deepfm": "20.0",
                                                             "lr": ""}  # fmt: skip
    untimed = to_markdown(aggregate([run("lr", 2021, None)], "frappe"), "frappe")
    assert "Speed index" not in untimed


def test_empty_workload_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="repeats and steps >= 1"):
        speed_index(1, repeats=0)
