"""A run scored on prepared data that was prepared again (other vocabularies) is refused:
evaluate, calibrate and export used whatever the recorded folder held, so the metrics of a
re-prepared folder were silently wrong (test AUC 0.53 -> 0.49 in a user's walkthrough)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from adrank.cli import app

SCHEMA = """
tasks: [click]
features:
  - {name: ad, type: categorical}
  - {name: user, type: categorical}
"""
FAST = ["--set", "train.max_epochs=1", "--set", "train.num_threads=1",
        "--set", "train.batch_size=64"]  # fmt: skip


def _csv(path: Path, n: int, shift: int) -> Path:
    rows = ["click,ad,user"]
    rows += [
        f"{int((i + shift) % 3 == 0)},a{(i * 7 + shift) % 11},u{(i + shift) % 13}" for i in range(n)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _prepare(tmp: Path, shift: int) -> None:
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--output", str(tmp / "prep")]
    for split, n in (("train", 300), ("valid", 60), ("test", 60)):
        args += [f"--{split}", str(_csv(tmp / f"{split}_{shift}.csv", n + shift, shift))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output


def test_evaluate_calibrate_export_refuse_data_prepared_again(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    _prepare(tmp_path, 0)
    run = tmp_path / "run"
    train = ["train", "--prepared", str(tmp_path / "prep"), "--model", "lr", "--run-dir", str(run)]
    assert CliRunner().invoke(app, [*train, *FAST]).exit_code == 0
    res = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert res.exit_code == 0, res.output
    before = json.loads(res.output)
    _prepare(tmp_path, 5)  # the same folder, prepared again from other rows: other ids
    for cmd in (["evaluate", str(run)], ["calibrate", str(run)],
                ["export", str(run), "--format", "torchscript"]):  # fmt: skip
        res = CliRunner().invoke(app, cmd)
        assert res.exit_code != 0, (cmd, res.output)
        assert "was prepared again" in " ".join(res.output.split()), res.output
    assert json.loads((run / "manifest.json").read_text())["calibration"] is None
    _prepare(tmp_path, 0)  # the same rows again: the same processor, accepted
    res = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert res.exit_code == 0, res.output
    after = json.loads(res.output)["metrics"]
    assert [after["auc"], after["logloss"]] == [before["metrics"][k] for k in ("auc", "logloss")]


def test_moved_prepared_data_is_found_with_prepared(tmp_path: Path) -> None:
    """evaluate, calibrate and export named the missing folder but could not be told where
    it went; --prepared points them at it (and still refuses other data)."""
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    _prepare(tmp_path, 0)
    run = tmp_path / "run"
    train = ["train", "--prepared", str(tmp_path / "prep"), "--model", "lr", "--run-dir", str(run)]
    assert CliRunner().invoke(app, [*train, *FAST]).exit_code == 0
    moved = tmp_path / "elsewhere"
    (tmp_path / "prep").rename(moved)
    res = CliRunner().invoke(app, ["evaluate", str(run)])
    assert res.exit_code != 0 and "--prepared DIR" in " ".join(res.output.split())
    for cmd in (["evaluate", str(run)], ["calibrate", str(run), "--method", "platt"],
                ["export", str(run), "--format", "torchscript"]):  # fmt: skip
        res = CliRunner().invoke(app, [*cmd, "--prepared", str(moved)])
        assert res.exit_code == 0, (cmd, res.output)
    assert json.loads((run / "manifest.json").read_text())["calibration"] == "calibration.json"
    _prepare(tmp_path, 5)  # other data at the old place: refused through --prepared too
    res = CliRunner().invoke(app, ["evaluate", str(run), "--prepared", str(tmp_path / "prep")])
    assert res.exit_code != 0 and "was prepared again" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["evaluate", str(run), "--prepared", str(tmp_path)])
    assert res.exit_code != 0 and "holds no prepared data" in " ".join(res.output.split())
