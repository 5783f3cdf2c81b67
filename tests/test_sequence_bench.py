"""``python -m benchmarks sequences`` on tiny synthetic sizes: result files and skipped cells
(no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import sequences


def test_tiny_run_writes_results_and_reports_capped_cells(tmp_path: Path) -> None:
    sequences.main(
        ["--lengths", "8,600", "--models", "sdim,dien", "--batch", "4", "--steps", "1",
         "--repeats", "1", "--threads", "1", "--output", str(tmp_path)]
    )  # fmt: skip
    payload = json.loads((tmp_path / "sequences.json").read_text())
    assert payload["synthetic"] is True and payload["lengths"] == [8, 600]
    for length in ("8", "600"):
        cell = payload["results"]["sdim"][length]
        assert cell["latency_ms"] > 0 and cell["train_samples_per_s"] > 0
    assert "latency_ms" in payload["results"]["dien"]["8"]
    assert payload["results"]["dien"]["600"] == {
        "skipped": "L > 500: GRU/AUGRU step through the history in Python"
    }
    text = (tmp_path / "sequences.md").read_text()
    assert "synthetic" in text.lower() and "skipped: L > 500" in text
