"""``python -m benchmarks inference`` with several Predictor backends, on a small real
frappe run: the modes, the exports it makes, and its result files (no timing assertions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import inference_speed


def test_mode_names_round_trip() -> None:
    for batch in (1, 100, 10_000):
        for backend in inference_speed.BACKENDS:
            mode = inference_speed.mode_name(batch, backend)
            assert inference_speed.parse_mode(mode) == (batch, backend)
    assert inference_speed.mode_name(1, "torch") == "predictor_b1"  # the old names stay


def test_backends_are_exported_and_timed_side_by_side(
    frappe_run: Path, data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(frappe_run, run)  # the export is written into the run
    results = tmp_path / "results"
    inference_speed.main(
        ["--run-dir", str(run), "--backends", "torch,torchscript", "--batch-sizes", "1",
         "--no-file", "--repeats", "1", "--threads", "1", "--scratch", str(tmp_path),
         "--data-dir", str(data_dir), "--results-dir", str(results)]
    )  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    assert "torchscript" in manifest["exports"]
    payload = json.loads((results / "inference_speed.json").read_text())
    modes = payload["modes"]
    assert list(modes) == ["predictor_b1", "predictor_b1_torchscript"]
    assert [m["backend"] for m in modes.values()] == ["torch", "torchscript"]
    assert all(m["samples_per_s"] > 0 and m["rows"] == 2000 for m in modes.values())
    assert "| predictor_b1_torchscript | 2,000 |" in (results / "inference_speed.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "tensorrt"], "unknown backend(s) ['tensorrt']"),
        (["--batch-sizes", "7"], "batch sizes must be among [1, 100, 10000]"),
    ],
)
def test_unknown_backend_or_batch_size_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        inference_speed.main(argv)  # refused before any run is trained or loaded
    assert message in capsys.readouterr().err
