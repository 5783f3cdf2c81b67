"""Pooling the runs of several GPU benchmark calls (``benchmarks/gpu_pool.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_pool

MACHINE = {"device": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0"}


def run(seed: int, rate: float) -> dict[str, Any]:
    return {"seed": seed, "epoch_train_s": [2.0, 1.0], "samples_per_s": rate}


def call(path: Path, cells: dict[str, Any], machine: dict[str, Any] = MACHINE) -> Path:
    path.write_text(json.dumps({"machine": machine, "cells": cells}))
    return path


def test_pools_the_variant_of_one_call_with_the_defaults_of_another(tmp_path: Path) -> None:
    first = call(
        tmp_path / "a.json",
        {
            "deepfm-8192": {
                "data": "synthetic",
                "loop": [run(2021, 100.0)],
                "adrank": [run(2021, 50.0)],  # the old defaults: not pooled
                "variants": {"cuda-graph": {"runs": [run(2021, 300.0)]}},
            }
        },
    )
    second = call(
        tmp_path / "b.json",
        {
            "deepfm-8192": {
                "data": "synthetic",
                "loop": [run(2021, 120.0), run(2022, 110.0), {"seed": 2023, "error": "x"}],
                "adrank": [run(2021, 280.0), run(2022, 320.0)],
            }
        },
    )
    sources = [gpu_pool.parse_source(f"{first}:cuda-graph"), gpu_pool.parse_source(str(second))]
    assert sources == [(first, "cuda-graph"), (second, None)]
    pooled = gpu_pool.pool(sources)
    cell = pooled["cells"]["deepfm-8192"]
    assert [r["samples_per_s"] for r in cell["adrank"]] == [300.0, 280.0, 320.0]
    assert [r["side"] for r in cell["adrank"]] == ["variant cuda-graph", "adrank", "adrank"]
    assert len(cell["loop"]) == 3  # the failed run is left out
    assert cell["loop_samples_per_s"] == 110.0 and cell["adrank_samples_per_s"] == 300.0
    assert cell["ratio"] == pytest.approx(300.0 / 110.0)
    assert cell["adrank_vs_reference"] == pytest.approx(300.0 / 2_055_899.0)
    markdown = gpu_pool.pooled_markdown(pooled, sources)
    row = "| deepfm-8192 | synthetic | 3 | 110 | 3 (seeds 2021, 2021, 2022) | 300 | 2.73 |"
    assert row in markdown

    gpu_pool.main([f"{first}:cuda-graph", str(second), "--output", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "gpu.json").read_text())["cells"]["deepfm-8192"]
    assert (tmp_path / "out" / "gpu.md").read_text() == markdown


def test_refuses_mixed_machines_and_missing_variants(tmp_path: Path) -> None:
    cells = {"dcnv2-8192": {"data": "d", "loop": [run(1, 1.0)], "adrank": [run(1, 2.0)]}}
    a = call(tmp_path / "a.json", cells)
    b = call(tmp_path / "b.json", cells, {**MACHINE, "device": "NVIDIA H100"})
    with pytest.raises(ValueError, match="different machines"):
        gpu_pool.pool([(a, None), (b, None)])
    with pytest.raises(ValueError, match="has no variant 'cuda-graph'"):
        gpu_pool.pool([(a, "cuda-graph")])
    with pytest.raises(ValueError, match="no source"):
        gpu_pool.pool([])
