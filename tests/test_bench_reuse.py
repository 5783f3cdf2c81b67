"""A recorded benchmark row is reused only for its own dataset and config
(``adrank/bench/reuse.py``); ``--verify`` says when the re-run is another model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import adrank.bench.verify as verify
from adrank.bench.reuse import RecordedRunConflict, config_digest
from adrank.bench.runner import BenchmarkRun, read_results, run_benchmark, spec_config
from adrank.config import RunConfig, TrainConfig
from tests.test_bench_verify import OVERRIDES, prepared, recorded  # noqa: F401 (fixtures)


def test_rows_record_their_dataset_and_config_and_are_reused_for_the_same(
    recorded: tuple[Path, BenchmarkRun],  # noqa: F811
) -> None:
    out, row = recorded
    assert row.dataset == "tiny"
    cfg = spec_config("tiny", "deepfm", [*OVERRIDES, "train.seed=2021"])
    assert row.config_digest == config_digest(cfg) and len(row.config_digest) == 16
    (again,) = run_benchmark("tiny", ["deepfm"], [2021], out, overrides=OVERRIDES)
    assert again == row  # reused, not re-trained
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1  # nor recorded again


def test_other_overrides_or_dataset_are_refused_not_reused(
    recorded: tuple[Path, BenchmarkRun],  # noqa: F811
) -> None:
    out, _ = recorded
    before = (out / "runs.jsonl").read_bytes()
    longer = [o for o in OVERRIDES if not o.startswith("train.max_epochs")]
    with pytest.raises(RecordedRunConflict, match="deepfm seed 2021 trained with another config"):
        run_benchmark("tiny", ["deepfm"], [2021], out, overrides=[*longer, "train.max_epochs=3"])
    with pytest.raises(RecordedRunConflict, match="holds runs of dataset tiny, not criteo"):
        run_benchmark("criteo", ["deepfm"], [2021], out, overrides=OVERRIDES)
    assert (out / "runs.jsonl").read_bytes() == before  # nothing recorded by the refusals


def test_a_row_without_a_digest_is_checked_by_its_overrides(
    recorded: tuple[Path, BenchmarkRun],  # noqa: F811
) -> None:
    out, row = recorded
    legacy = dataclasses.replace(row, config_digest="", dataset="")
    (out / "runs.jsonl").write_text(json.dumps(dataclasses.asdict(legacy)) + "\n")
    with pytest.raises(RecordedRunConflict, match="but this benchmark asks for"):
        run_benchmark("tiny", ["deepfm"], [2021], out, overrides=OVERRIDES[:-1])
    (again,) = run_benchmark("tiny", ["deepfm"], [2021], out, overrides=OVERRIDES)
    assert again.test_auc == row.test_auc


def test_a_finished_run_directory_of_another_config_is_not_taken_over(
    recorded: tuple[Path, BenchmarkRun],  # noqa: F811
) -> None:
    out, row = recorded
    (out / "runs.jsonl").unlink()  # the run directory alone is still there
    other = [o for o in OVERRIDES if not o.startswith("params.embedding_dim")]
    with pytest.raises(RecordedRunConflict, match=r"params.embedding_dim: 4 -> "):
        run_benchmark("tiny", ["deepfm"], [2021], out, overrides=other)
    (again,) = run_benchmark("tiny", ["deepfm"], [2021], out, overrides=OVERRIDES)
    assert again.test_auc == row.test_auc  # read back from the run directory


def test_config_digest_ignores_notes_console_and_new_defaults() -> None:
    cfg = RunConfig(model="DeepFM", dataset="frappe", params={"embedding_dim": 4})
    same = dataclasses.replace(
        cfg, model="deepfm", notes="tuned", train=TrainConfig(progress=False)
    )
    assert config_digest(cfg) == config_digest(same)
    assert config_digest(cfg) != config_digest(dataclasses.replace(cfg, dataset="criteo"))
    other_train = dataclasses.replace(cfg, train=TrainConfig(learning_rate=0.01))
    assert config_digest(cfg) != config_digest(other_train)


def test_verify_refuses_another_dataset_and_names_another_model_or_set(
    recorded: tuple[Path, BenchmarkRun],  # noqa: F811
    tmp_path: Path,
) -> None:
    out, row = recorded
    results = out / "runs.jsonl"
    with pytest.raises(RecordedRunConflict, match="trained on tiny, not criteo"):
        verify.verify_run("criteo", "deepfm", 2021, results)
    shutil.rmtree(row.run_dir)  # the shipped config + the row's overrides, then --set
    checked = verify.verify_run(
        "tiny", "deepfm", 2021, results, overrides=["params.embedding_dim=6"]
    )
    text = "\n".join(checked.report())
    assert not checked.reproduced and checked.num_parameters != row.num_parameters
    assert "the re-run trained another model than the row" in text
    assert f"the row's {row.num_parameters:,}" in text
    checked = verify.verify_run(
        "tiny", "deepfm", 2021, results, overrides=["train.learning_rate=0.05"]
    )
    text = "\n".join(checked.report())
    assert checked.overrides == ("train.learning_rate=0.05",) and not checked.reproduced
    assert "NOT reproduced with --set train.learning_rate=0.05" in text
    assert read_results(results)[("deepfm", 2021)] == row
