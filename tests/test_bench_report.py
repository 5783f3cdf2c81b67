"""Leaderboard report: aggregation over seeds, BARS reference column, config notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from adrank.bench.report import aggregate, to_markdown, write_report
from adrank.bench.runner import BenchmarkRun
from adrank.config import ConfigError, RunConfig


def run(model: str, seed: int, auc: float, logloss: float) -> BenchmarkRun:
    return BenchmarkRun(
        model=model,
        seed=seed,
        test_auc=auc,
        test_logloss=logloss,
        valid_auc=auc - 0.001,
        num_parameters=1000,
        epochs=10 + seed % 3,
        best_epoch=8,
        train_time_s=20.0 + seed % 3,
        train_samples_per_s=5000.0,
        run_dir=f"runs/{model}-seed{seed}",
    )


RUNS = [
    run("deepfm", 2021, 0.9860, 0.15),
    run("deepfm", 2022, 0.9866, 0.14),
    run("mymodel", 2021, 0.9700, 0.20),
]


def test_aggregate_means_sample_std_reference_and_order() -> None:
    rows = aggregate(RUNS, "frappe")
    assert [r.model for r in rows] == ["deepfm", "mymodel"]  # by mean test AUC
    deepfm = rows[0]
    assert deepfm.seeds == 2
    assert deepfm.auc_mean == pytest.approx(0.9863)
    assert deepfm.auc_std == pytest.approx(0.00042426, rel=1e-4)  # ddof=1
    assert deepfm.reference_auc == pytest.approx(0.9842)  # BARS Frappe_x1 DeepFM
    assert deepfm.delta == pytest.approx(0.0021)
    assert rows[1].reference_auc is None and rows[1].auc_std == 0.0


def test_markdown_lists_notes_of_listed_models_only() -> None:
    rows = aggregate(RUNS, "frappe")
    md = to_markdown(rows, "frappe", notes={"mymodel": "tuned on val", "other": "unused"})
    assert "| deepfm | 2 | 0.9863 ± 0.0004 |" in md
    assert "| mymodel | 1 | 0.9700 ± 0.0000 |" in md
    assert md.endswith("## Notes\n\n- **mymodel**: tuned on val\n")
    assert "other" not in md
    assert "## Notes" not in to_markdown(rows, "frappe")


def test_write_report_reads_notes_from_shipped_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = tmp_path / "configs" / "models" / "frappe"
    configs.mkdir(parents=True)
    (configs / "mymodel.yaml").write_text(
        "model: mymodel\nnotes: >\n  Deviates from the reference:\n  layer norm added.\n"
    )
    (configs / "deepfm.yaml").write_text("model: deepfm\n")
    monkeypatch.setenv("ADRANK_CONFIG_DIR", str(tmp_path / "configs"))
    out = tmp_path / "out"
    write_report(RUNS, "frappe", out)
    md = (out / "leaderboard.md").read_text()
    assert "- **mymodel**: Deviates from the reference: layer norm added.\n" in md
    assert "**deepfm**" not in md
    csv = (out / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("model,") and len(csv) == 3


def test_run_config_notes_are_text_and_round_trip() -> None:
    cfg = RunConfig.from_dict({"model": "dnn", "notes": "a  b\n c"})
    assert cfg.notes == "a b c"
    assert RunConfig.from_dict(cfg.to_dict()).notes == "a b c"
    assert RunConfig.from_dict({"model": "dnn"}).notes is None
    with pytest.raises(ConfigError, match="'notes' must be text"):
        RunConfig.from_dict({"model": "dnn", "notes": ["x"]})


def test_code_version_and_rows_recorded_before_it(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    import adrank
    from adrank.bench.runner import code_version, read_results

    version = code_version()
    assert version == adrank.__version__ or version.startswith(f"{adrank.__version__}+g")
    old = {k: v for k, v in asdict(RUNS[0]).items() if k != "code"}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(old) + "\n" + json.dumps(asdict(RUNS[2]) | {"code": "x"}) + "\n")
    rows = read_results(path)
    assert rows[("deepfm", 2021)].code == "" and rows[("mymodel", 2021)].code == "x"


def test_committed_frappe_leaderboard_renders_unchanged() -> None:
    """The single-task report of the committed frappe runs is the committed table."""
    from adrank.bench.report import to_csv
    from adrank.bench.runner import read_results

    results = Path(__file__).parent.parent / "benchmarks" / "results" / "frappe"
    from adrank.bench.provenance import read_verifications

    runs = list(read_results(results / "runs.jsonl").values())
    rows = aggregate(runs, "frappe", read_verifications(results))
    table = [line for line in to_markdown(rows, "frappe").splitlines() if line.startswith("|")]
    committed = (results / "leaderboard.md").read_text().splitlines()
    assert table == [line for line in committed if line.startswith("|")]
    assert to_csv(rows).splitlines() == (results / "leaderboard.csv").read_text().splitlines()


def test_single_task_runs_of_a_multi_task_dataset_get_only_their_columns(tmp_path: Path) -> None:
    """A board of ``model@like`` runs on movielens_100k (tasks like, love) shows the like
    columns only, not empty love and CTCVR ones."""
    from dataclasses import replace

    runs = [
        replace(r, model=f"{r.model}@like", task="like",
                metrics={"like_auc": r.test_auc, "like_logloss": r.test_logloss})
        for r in RUNS
    ]  # fmt: skip
    write_report(runs, "movielens_100k", tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "like AUC" in header and "love" not in header and "CTCVR" not in header
    assert "like_auc_mean" in (tmp_path / "leaderboard.csv").read_text().splitlines()[0]
