"""The OPE and shrinkage benchmarks on the real data, writing to a temporary folder.

The OPE benchmark runs without obp here (``--peers-venv`` points nowhere), so obp's numbers
come from the committed export; the shrinkage benchmark is small enough to run whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
@pytest.mark.slow
def test_ope_benchmark_without_obp(data_dir: Path, tmp_path: Path) -> None:
    from benchmarks import ope

    ope.main(["--bootstrap", "50", "--peers-venv", str(tmp_path / "none"),
              "--data-dir", str(data_dir), "--out", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "ope.json").read_text())
    assert "committed fixture" in result["obp"]["source"]
    ips = {e["estimator"]: e["value"] for e in result["adrank"]["logistic"]}["ips"]
    assert ips == pytest.approx(result["obp"]["estimates"]["ipw"]["value"], abs=1e-6)
    assert result["bts_on_policy"]["value"] == pytest.approx(0.0042)
    md = (tmp_path / "ope.md").read_text()
    assert "## Why not IPS training or DLA" in md and "| all | bts | 3 |" in md
    assert (tmp_path / "position_ctr.png").read_bytes()[:8] == PNG


@pytest.mark.integration
@pytest.mark.slow
def test_shrinkage_benchmark(data_dir: Path, tmp_path: Path) -> None:
    from benchmarks import shrinkage

    shrinkage.main(["--data-dir", str(data_dir), "--out", str(tmp_path)])
    result = json.loads((tmp_path / "shrinkage.json").read_text())
    overall = result["rows"][-1]
    assert overall["bucket"] == "all" and overall["movies"] == result["movies_scored"]
    assert overall["sure_pooled"] < overall["raw"] and overall["eb"] < overall["raw"]
    assert (tmp_path / "shrinkage.png").read_bytes()[:8] == PNG
    assert "| 2-4 |" in (tmp_path / "shrinkage.md").read_text()
