"""Reliability and per-position CTR plots as real PNG files, field-level calibration through
the slice API, and ``adrank evaluate --plots`` end to end on a tiny run with a position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.ope import position_ctr
from adrank.plots import plot_position_ctr, plot_reliability

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"

SCHEMA = """
tasks:
  - {name: click, label: click}
roles: {position: slot}
features:
  - {name: user, type: categorical}
  - {name: ad, type: categorical}
"""
FAST = ["--set", "train.max_epochs=1", "--set", "train.num_threads=1",
        "--set", "train.batch_size=32"]  # fmt: skip


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_reliability_and_position_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.5, 2000)
    y = (rng.random(2000) < p).astype(float)
    assert _is_png(plot_reliability(y, p, tmp_path / "rel.png", "synthetic"))
    pos = rng.integers(1, 4, 2000)
    curves = {"a: one": position_ctr(pos, y, p), "b: two": position_ctr(pos, y)}
    assert _is_png(plot_position_ctr(curves, tmp_path / "pos.png", "synthetic", panels=2))
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed


def _prepare(tmp_path: Path) -> Path:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    for split, n in (("train", 150), ("valid", 60), ("test", 90)):
        rows = ["click,slot,user,ad"]
        for i in range(n):
            slot = 1 + i % 3
            rows.append(f"{int(i % (slot + 1) == 0)},{slot},u{i % 4},a{i % 5}")
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    args = ["prepare", "--schema", str(tmp_path / "schema.yaml"), "--output", str(tmp_path / "d")]
    for split in ("train", "valid", "test"):
        args += [f"--{split}", str(tmp_path / f"{split}.csv")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return tmp_path / "d"


def test_evaluate_plots_and_field_calibration(tmp_path: Path) -> None:
    data = _prepare(tmp_path)
    run = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["train", "--prepared", str(data), "--model", "lr", "--run-dir", str(run), *FAST]
    )
    assert res.exit_code == 0, res.output
    plots = tmp_path / "plots"
    res = CliRunner().invoke(
        app, ["evaluate", str(run), "--plots", str(plots), "--slice-by", "position", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert _is_png(plots / "reliability.png") and _is_png(plots / "position_ctr.png")
    assert sorted(Path(p).name for p in out["plots"]) == ["position_ctr.png", "reliability.png"]
    cal = out["field_calibration"]
    assert set(cal["values"]) == {"1", "2", "3"}
    rows = sum(v["rows"] for v in cal["values"].values())
    assert rows == 90
    expected = sum(v["rows"] * abs(v["mean_pred"] - v["mean_obs"]) for v in cal["values"].values())
    assert cal["error"] == pytest.approx(expected / rows)
    for name, v in cal["values"].items():
        assert v["ratio"] == pytest.approx(out["slices"][name]["calibration_ratio"])
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "position"])
    assert res.exit_code == 0 and "field-level calibration error" in res.output
