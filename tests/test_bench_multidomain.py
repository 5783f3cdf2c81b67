"""benchmarks/multidomain.py's summary: pooled, per-domain and multi-domain rows side by
side, and the per-domain verdict (a gap larger than the seeds' std; none with one seed).
Hand-made runs.jsonl files (no training)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from adrank.bench.runner import BenchmarkRun
from benchmarks.multidomain import summarize, to_markdown, write_summary


def _write(path: Path, rows: list[tuple[str, int, dict[str, float]]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "runs.jsonl", "w") as fh:
        for model, seed, metrics in rows:
            run = BenchmarkRun(model, seed, metrics.get("auc", float("nan")), 0.5, 0.7, 1, 1, 1,
                               1.0, 1.0, "", metrics=metrics)  # fmt: skip
            fh.write(json.dumps(asdict(run)) + "\n")


def test_summary_compares_multi_domain_models_with_both_baselines(tmp_path: Path) -> None:
    def pooled(auc_a: float, auc_b: float) -> dict[str, float]:
        return {"auc": (auc_a + auc_b) / 2, "auc@a": auc_a, "auc@b": auc_b}

    _write(tmp_path / "pooled", [
        ("star", 1, pooled(0.80, 0.70)), ("star", 2, pooled(0.82, 0.70)),
        ("dnn", 1, pooled(0.70, 0.71)), ("dnn", 2, pooled(0.70, 0.71)),
    ])  # fmt: skip
    _write(tmp_path / "only_a", [("dnn", 1, {"auc@a": 0.60}), ("dnn", 2, {"auc@a": 0.62})])
    _write(tmp_path / "only_b", [("dnn", 1, {"auc@b": 0.75}), ("dnn", 2, {"auc@b": 0.75})])
    summary = summarize("movielens_100k_domains", tmp_path)
    assert summary["domains"] == ["a", "b"]
    assert summary["rows"]["dnn (per domain)"]["auc@a"][0] == 0.61
    a, b = summary["verdicts"]["a"], summary["verdicts"]["b"]
    assert (a["multi_domain"], a["baseline"], a["beats_by_more_than_std"]) == ("star", "dnn", True)
    assert round(a["auc_gap"], 6) == 0.11
    assert (b["baseline"], b["beats_by_more_than_std"]) == ("dnn (per domain)", False)
    # against pooled training alone, b's verdict compares star with the pooled dnn
    assert (b["pooled_baseline"], b["pooled_beats_by_more_than_std"]) == ("dnn", False)
    assert round(b["pooled_auc_gap"], 6) == -0.01
    md = to_markdown(summary)
    assert "| dnn (per domain) | 2 | – | 0.6100 ± 0.0141 | 0.7500 ± 0.0000 |" in md
    assert "| star | 2 | 0.7550 ± 0.0071 |" in md
    assert "- **a**: best multi-domain star vs best baseline dnn: AUC +0.1100" in md
    assert "; vs pooled dnn: AUC -0.0100 (larger seed std 0.0000): no." in md


def test_one_seed_gives_no_verdict(tmp_path: Path) -> None:
    _write(tmp_path / "pooled", [("star", 1, {"auc@a": 0.9}), ("dnn", 1, {"auc@a": 0.5})])
    _write(tmp_path / "only_a", [("dnn", 1, {"auc@a": 0.6})])
    summary = summarize("movielens_100k_domains", tmp_path)
    assert summary["verdicts"]["a"]["beats_by_more_than_std"] is None
    md = to_markdown(summary)
    assert "n/a (one seed)" in md
    assert "| star | 1 |" in md and "| dnn (per domain) | 1 |" in md


def test_write_summary_writes_markdown_json_and_a_png(tmp_path: Path) -> None:
    _write(tmp_path / "pooled", [
        ("star", 1, {"auc": 0.8, "auc@a": 0.8}), ("star", 2, {"auc": 0.81, "auc@a": 0.81}),
        ("dnn", 1, {"auc": 0.7, "auc@a": 0.7}), ("dnn", 2, {"auc": 0.72, "auc@a": 0.72}),
    ])  # fmt: skip
    md = write_summary("movielens_100k_domains", tmp_path)
    assert md.read_text() == to_markdown(summarize("movielens_100k_domains", tmp_path))
    assert json.loads((tmp_path / "summary.json").read_text())["domains"] == ["a"]
    png = (tmp_path / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
