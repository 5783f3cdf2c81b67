"""Training and model runs meet damaged files and bad settings: a truncated checkpoint, a
resume on other data or with another model, a diverging learning rate, a validation split
with one class, a device the machine does not have, a run directory whose weights are
damaged or another model's. Each ends in one clear error line (no traceback), and nothing
the run had written is replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from adrank.cli import app

SCHEMA = """
tasks: [{name: click, label: click}]
features:
  - {name: user, type: categorical}
  - {name: ad, type: categorical}
  - {name: price, type: numeric, normalizer: log1p}
"""
FAST = ["--set", "train.num_threads=1", "--set", "train.batch_size=32"]


def _csv(path: Path, n: int, *, prefix: str = "", clicks: bool = True) -> Path:
    rows = ["click,user,ad,price"]
    for i in range(n):
        click = int(clicks and i % 3 == 0)
        rows.append(f"{click},{prefix}u{i % 4},{prefix}a{i % 7},{i % 11}.5")
    path.write_text("\n".join(rows) + "\n")
    return path


def _prepare(tmp: Path, name: str, *, prefix: str = "", valid_clicks: bool = True) -> Path:
    (tmp / "schema.yaml").write_text(SCHEMA)
    out = tmp / name
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--output", str(out)]
    args += ["--train", str(_csv(tmp / f"{name}-train.csv", 240, prefix=prefix))]
    args += ["--valid", str(_csv(tmp / f"{name}-valid.csv", 60, prefix=prefix,
                                 clicks=valid_clicks))]  # fmt: skip
    args += ["--test", str(_csv(tmp / f"{name}-test.csv", 60, prefix=prefix))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def _train(data: Path, run_dir: Path, *extra: str, model: str = "lr") -> Result:
    args = ["train", "--prepared", str(data), "--model", model, "--run-dir", str(run_dir)]
    return CliRunner().invoke(app, [*args, *FAST, *extra])


def _clean_failure(res: Result) -> str:
    """The output of a command that failed through ``fail`` (exit 1, one error line)
    rather than an uncaught exception (a traceback, or click's bare ``Aborted!``)."""
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "error:" in res.output and "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("s12"), "data")


@pytest.fixture(scope="module")
def finished(data: Path) -> Path:
    """A finished two-epoch LR run."""
    run = data.parent / "run"
    res = _train(data, run, "--set", "train.max_epochs=2")
    assert res.exit_code == 0, res.output
    return run


def _interrupted(finished: Path, tmp_path: Path) -> Path:
    """A copy of ``finished`` as an interrupted run leaves it: checkpoint, no manifest."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for name in ("manifest.json", "model.pt", "config.yaml", "metrics.json"):
        (run / name).unlink()
    return run


def _damage(path: Path, how: str) -> bytes:
    """Truncate, empty or replace ``path`` as a killed copy or a full disk would; returns
    the bytes left in it."""
    raw = path.read_bytes()
    damaged = {"truncated": raw[: len(raw) // 3], "empty": b"", "garbage": b"hello\n"}[how]
    path.write_bytes(damaged)
    return damaged


# ------------------------------------------------------------------------ resume ----
@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_resume_from_a_damaged_checkpoint_is_a_clear_error(
    data: Path, finished: Path, tmp_path: Path, how: str
) -> None:
    run = _interrupted(finished, tmp_path)
    damaged = _damage(run / "checkpoint.pt", how)
    res = _train(data, run, "--set", "train.max_epochs=3", "--resume")
    out = _clean_failure(res)
    assert "checkpoint.pt" in out and "cannot be read" in out and "--overwrite" in out
    # neither restarted from scratch nor replaced: the damaged file is left to look at
    assert (run / "checkpoint.pt").read_bytes() == damaged
    assert not (run / "manifest.json").exists()


def test_resume_on_other_prepared_data_is_refused(
    data: Path, finished: Path, tmp_path: Path
) -> None:
    other = _prepare(tmp_path, "other", prefix="x")  # same shapes, other vocabularies
    run = _interrupted(finished, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    res = _train(other, run, "--set", "train.max_epochs=3", "--resume")
    out = _clean_failure(res)
    assert "changed: training data" in out and "--overwrite" in out
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not (run / "manifest.json").exists()
    # the same data resumes as before
    res = _train(data, run, "--set", "train.max_epochs=3", "--resume")
    assert res.exit_code == 0, res.output
    assert "best epoch" in res.output and "/3" in res.output


def test_resume_with_another_model_names_both_models(
    data: Path, finished: Path, tmp_path: Path
) -> None:
    run = _interrupted(finished, tmp_path)
    res = _train(data, run, "--set", "train.max_epochs=3", "--resume", model="fm")
    out = _clean_failure(res)
    assert "changed: model 'lr' -> 'fm'" in out and "--overwrite" in out
    assert not (run / "manifest.json").exists()


# ------------------------------------------------------------------- divergence ----
def test_diverging_learning_rate_stops_with_a_clear_message_and_no_model(
    data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    diverge = ["--set", "train.learning_rate=1e38", "--set", "train.grad_clip_norm=null"]
    res = _train(data, run, "--set", "train.max_epochs=2", *diverge)
    out = _clean_failure(res)
    assert "training loss is nan in epoch 1" in out and "learning_rate" in out
    written = {p.name for p in run.iterdir()}
    assert not written & {"model.pt", "best.pt", "checkpoint.pt", "manifest.json"}, written


def test_single_class_validation_split_with_an_auc_monitor_is_refused_before_training(
    tmp_path: Path,
) -> None:
    data = _prepare(tmp_path, "noclicks", valid_clicks=False)
    run = tmp_path / "run"
    res = _train(data, run, "--set", "train.max_epochs=2")
    out = _clean_failure(res)
    assert "validation split" in out and "0 positive" in out and "monitor" in out
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint.pt").exists()
    # a monitor that is defined on one class trains
    res = _train(data, run, "--set", "train.max_epochs=1", "--set", "train.monitor=logloss")
    assert res.exit_code == 0, res.output


# ----------------------------------------------------------------------- device ----
@pytest.mark.parametrize(
    ("device", "available"),
    [
        ("cuda", torch.cuda.is_available()),
        ("cuda:7", torch.cuda.device_count() > 7),
        ("mps", torch.backends.mps.is_available()),
        ("gpu", False),
    ],
)
def test_a_device_this_machine_lacks_is_a_clear_error(
    data: Path, tmp_path: Path, device: str, available: bool
) -> None:
    if available:
        pytest.skip(f"{device} exists on this machine")
    run = tmp_path / "run"
    res = _train(data, run, "--set", "train.max_epochs=1", "--set", f"train.device={device}")
    out = _clean_failure(res)
    assert f"train.device={device!r}" in out
    assert not (run / "metrics.jsonl").exists()


# ------------------------------------------------------- damaged run directories ----
def _damaged_run(finished: Path, tmp_path: Path, how: str) -> Path:
    run = tmp_path / "damaged"
    shutil.copytree(finished, run)
    if how == "manifest":
        (run / "manifest.json").write_text("{")
    elif how == "foreign":  # another model's weights copied over this run's
        res = _train(finished.parent / "data", tmp_path / "fm", "--set", "train.max_epochs=1",
                     model="fm")  # fmt: skip
        assert res.exit_code == 0, res.output
        shutil.copy(tmp_path / "fm" / "model.pt", run / "model.pt")
    else:
        _damage(run / "model.pt", how)
    return run


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "foreign", "manifest"])
def test_evaluate_predict_export_on_a_damaged_run_name_the_file(
    finished: Path, tmp_path: Path, how: str
) -> None:
    run = _damaged_run(finished, tmp_path, how)
    name = "manifest.json" if how == "manifest" else "model.pt"
    raw = finished.parent / "data-test.csv"
    scored = tmp_path / "scored.csv"
    for args in (
        ["evaluate", str(run)],
        ["predict", str(run), "--input", str(raw), "--output", str(scored)],
        ["export", str(run)],
    ):
        out = _clean_failure(CliRunner().invoke(app, args))
        assert name in out, (args[0], out)
        if how == "foreign":
            assert "'lr'" in out, (args[0], out)
    assert not scored.exists()
    assert not (run / "model.torchscript.pt").exists()


@pytest.mark.parametrize("size", ["0", "-5"])
def test_predict_refuses_a_batch_size_below_one(finished: Path, tmp_path: Path, size: str) -> None:
    scored = tmp_path / "scored.csv"
    res = CliRunner().invoke(
        app,
        ["predict", str(finished), "--input", str(finished.parent / "data-test.csv"),
         "--output", str(scored), "--batch-size", size],
    )  # fmt: skip
    assert res.exit_code == 2 and "--batch-size" in res.output, res.output
    assert not scored.exists()


# -------------------------------------------------------------------- estimator ----
def _frame(n: int) -> tuple[object, object]:
    import numpy as np
    import polars as pl

    X = pl.DataFrame({"user": [f"u{i % 5}" for i in range(n)], "price": np.arange(n) / n})
    return X, (np.arange(n) % 20 == 0).astype(int)  # 5 % positives


def test_estimator_refuses_held_out_rows_of_one_class_before_training() -> None:
    from adrank import CTRClassifier

    X, y = _frame(60)  # the 10 % held out for early stopping hold no click
    train = {"max_epochs": 1, "batch_size": 16, "num_threads": 1}
    clf = CTRClassifier(model="lr", train=train)
    with pytest.raises(ValueError, match=r"validation split .* 0 positive.*train\.monitor"):
        clf.fit(X, y)
    assert not hasattr(clf, "history_")
    clf = CTRClassifier(model="lr", train={**train, "monitor": "logloss"})
    assert len(clf.fit(X, y).history_) == 1


def test_estimator_save_never_writes_into_a_folder_of_the_users(tmp_path: Path) -> None:
    from adrank import CTRClassifier
    from adrank.outputs import OutputDirError
    from adrank.serve import Predictor

    X, y = _frame(60)
    clf = CTRClassifier(model="lr", train={"max_epochs": 1, "num_threads": 1}, valid_fraction=0)
    clf.fit(X, y)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "analysis.ipynb").write_text("the user's own notebook\n")
    with pytest.raises(OutputDirError, match="not created by adrank"):
        clf.save(mine)
    assert [p.name for p in mine.iterdir()] == ["analysis.ipynb"]
    assert (mine / "analysis.ipynb").read_text() == "the user's own notebook\n"
    run = clf.save(tmp_path / "run")
    assert clf.save(run) == run  # its own run directory is saved again
    assert Predictor.load(run).predict([{"user": "u1", "price": 0.5}]).shape == (1,)
