"""The dropout-kernel speed benchmark's run order and summary (no training here)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.dropout_speed import markdown, run_order, summarize


def test_rounds_alternate_the_kernel_order() -> None:
    order = run_order(["deepfm", "dcnv3"], 2)
    assert order == [
        (1, "deepfm", "torch"), (1, "deepfm", "fast"), (1, "dcnv3", "torch"), (1, "dcnv3", "fast"),
        (2, "deepfm", "fast"), (2, "deepfm", "torch"), (2, "dcnv3", "fast"), (2, "dcnv3", "torch"),
    ]  # fmt: skip


def test_speedup_is_the_median_of_same_round_ratios() -> None:
    runs = [
        {"round": 1, "model": "deepfm", "kernel": "torch", "sps": 100.0},
        {"round": 1, "model": "deepfm", "kernel": "fast", "sps": 130.0},
        {"round": 2, "model": "deepfm", "kernel": "fast", "sps": 60.0},  # a slow phase hits
        {"round": 2, "model": "deepfm", "kernel": "torch", "sps": 50.0},  # both kernels alike
        {"round": 3, "model": "deepfm", "kernel": "torch", "sps": 100.0},
        {"round": 3, "model": "deepfm", "kernel": "fast", "sps": 140.0},
    ]
    s = summarize(runs)["deepfm"]
    assert s["ratios"] == pytest.approx([1.3, 1.2, 1.4])
    assert s["speedup"] == pytest.approx(1.3)
    assert s["torch"] == 100.0 and s["fast"] == 130.0  # medians of samples/s
    md = markdown(summarize(runs), argparse.Namespace(epochs=2, threads=2, rounds=3))
    assert "| deepfm | 100 | 130 | 1.30× (1.20–1.40) |" in md
