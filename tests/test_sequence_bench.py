"""``python -m benchmarks sequences`` on tiny synthetic sizes: result files, the HTTP column
(a real server subprocess ranking a real history), skipped cells and the report (no timing
assertions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import sequences


def test_tiny_run_measures_in_process_and_over_http(tmp_path: Path) -> None:
    sequences.main(
        ["--lengths", "5,20", "--models", "sdim", "--batch", "2", "--steps", "1",
         "--repeats", "1", "--threads", "1", "--output", str(tmp_path)]
    )  # fmt: skip
    payload = json.loads((tmp_path / "sequences.json").read_text())
    assert payload["synthetic"] is True and payload["lengths"] == [5, 20]
    for length in ("5", "20"):
        cell = payload["results"]["sdim"][length]
        assert cell["latency_ms"] > 0 and cell["train_samples_per_s"] > 0
        # a 200 that ranked exactly the 100 candidates, else the cell says why
        http = cell["http"]
        assert "skipped" not in http, http
        assert http["latency_ms"] > 0 and http["request_bytes"] <= http["max_body_bytes"]
    text = (tmp_path / "sequences.md").read_text()
    assert "synthetic" in text.lower() and "HTTP latency (ms)" in text
    assert "| sdim | 20 |" in text


def test_capped_cells_are_skipped_with_the_reason_without_running() -> None:
    args = argparse.Namespace(http=True)
    assert sequences.run_cell("dien", 600, args) == {
        "skipped": "L > 500: GRU/AUGRU step through the history in Python"
    }


def test_the_request_is_a_history_of_l_items_and_100_candidates() -> None:
    body = json.loads(sequences.rank_body(7))
    assert len(body["context"]["hist_item"]) == 7 and body["slots"] == 100
    assert len({c["ad_id"] for c in body["candidates"]}) == 100


def test_a_response_that_does_not_rank_all_candidates_fails_the_cell() -> None:
    ids = [f"ad{k}" for k in range(100)]
    full = {"slots": [{"ad_id": a} for a in ids], "scored_pairs": 100}
    assert sequences.check_response(200, json.dumps(full).encode()) is None
    short = {"slots": [{"ad_id": a} for a in ids[:99]], "scored_pairs": 100}
    assert "ranked 99 ads" in str(sequences.check_response(200, json.dumps(short).encode()))
    too_big = sequences.check_response(413, b'{"detail": "body over 4096 bytes"}')
    assert too_big is not None and too_big.startswith("HTTP 413")


def test_report_gives_both_columns_and_both_ratios() -> None:
    def cell(local: float, http: dict) -> dict:
        return {"latency_ms": local, "train_samples_per_s": 10.0, "peak_rss_mib": 300.0,
                "http": http}  # fmt: skip

    results = {
        "sdim": {"50": cell(2.0, {"latency_ms": 10.0, "server_peak_rss_mib": 350.0}),
                 "5000": cell(3.0, {"latency_ms": 15.0, "server_peak_rss_mib": 400.0})},
        "bst": {"50": cell(2.0, {"skipped": "failed: HTTP 500: boom"}),
                "5000": {"skipped": "over the 300 s cell time limit"}},
    }  # fmt: skip
    meta = {"batch": 256, "repeats": 5, "machine": "test", "load_average": 0.0}
    text = sequences.report(results, [50, 5000], meta)
    assert "| sdim | 1.50x | 1.50x |" in text
    assert "| bst | – | – |" in text
    assert "skipped: failed: HTTP 500: boom" in text
    assert "| bst | 5,000 | skipped: over the 300 s cell time limit |" in text


def test_report_of_a_stopped_run_marks_the_cells_not_run() -> None:
    from benchmarks.sequences import report

    meta = {"batch": 2, "repeats": 1, "machine": "test", "load_average": 0.0}
    cell = {"train_samples_per_s": 10.0, "peak_rss_mib": 100.0, "latency_ms": 2.0,
            "http": {"latency_ms": 5.0, "server_peak_rss_mib": 200.0}}  # fmt: skip
    text = report({"sdim": {"50": cell}}, [50, 5000], meta)
    assert "| sdim | 50 | 10 | 100 | 2.0 | 5.0 | 200 |" in text
    assert "| sdim | 5,000 | not run (stopped first) |" in text
