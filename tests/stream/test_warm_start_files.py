"""``adrank train --init-from RUN --train FILE``: a warm start on your own new logs (it
took only a registered ``--dataset`` before). The logs here are synthetic, made up for this
test: clicks depend on the parity of a site and an app id; day 2 brings new ids."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.artifact import load_artifact
from adrank.cli import app
from adrank.stream.warm_start import GROWTH_FILE

SCHEMA = """
tasks: [{name: click, label: click}]
features:
  - {name: site, type: categorical}
  - {name: app, type: categorical}
"""
SMALL = ["--set", "train.max_epochs=1", "--set", "train.batch_size=256",
         "--set", "train.num_threads=1"]  # fmt: skip


def _logs(path: Path, rows: int, sites: int, apps: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = ["click,site,app"]
    for _ in range(rows):
        s, a = rng.randrange(sites), rng.randrange(apps)
        lines.append(f"{int(rng.random() < (0.7 if (s + a) % 2 else 0.2))},s{s},a{a}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def day1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("day1")
    (tmp / "schema.yaml").write_text(SCHEMA)
    train, valid = _logs(tmp / "d1.csv", 2000, 6, 5, 1), _logs(tmp / "d1v.csv", 400, 6, 5, 2)
    out = _invoke("prepare", "--schema", tmp / "schema.yaml", "--train", train, "--valid", valid,
                  "--output", tmp / "prepared")  # fmt: skip
    assert out.exit_code == 0, out.output
    run = tmp / "run1"
    out = _invoke("train", "--model", "deepfm", "--prepared", tmp / "prepared",
                  "--run-dir", run, *SMALL)  # fmt: skip
    assert out.exit_code == 0, out.output
    return run


def test_warm_start_on_new_log_files(day1_run: Path, tmp_path: Path) -> None:
    train = _logs(tmp_path / "d2.csv", 2000, 8, 6, 3)  # s6, s7 and a5 are new
    valid = _logs(tmp_path / "d2v.csv", 400, 8, 6, 4)
    test = _logs(tmp_path / "d2t.csv", 400, 8, 6, 5)
    run2 = tmp_path / "run2"
    out = _invoke("train", "--model", "deepfm", "--init-from", day1_run, "--train", train,
                  "--valid", valid, "--test", test, "--run-dir", run2,
                  "--cache-dir", tmp_path / "cache", *SMALL)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (run2 / GROWTH_FILE).exists()
    old, new = load_artifact(day1_run), load_artifact(run2)
    for table in ("site", "app"):  # every old id keeps its number; the new ones follow
        before = old.processor.vocab_[table]
        assert new.processor.vocab_[table][: len(before)] == before
    assert {"s6", "s7"} <= set(new.processor.vocab_["site"])
    assert "a5" in new.processor.vocab_["app"]
    assert new.config.params == old.config.params  # the run's config, not the defaults
    assert set(new.metrics["test"]) >= {"auc", "logloss"}  # the --test file was scored
    assert new.manifest["init_from"] == str(day1_run)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "X"], "give --init-from RUN"),
        (["--valid", "X"], "--valid and --test go with --train"),
        (["--dataset", "frappe", "--init-from", "RUN", "--train", "X"], "no --dataset"),
    ],
)
def test_train_file_options_are_checked(args: list[str], message: str, tmp_path: Path) -> None:
    out = _invoke("train", "--model", "deepfm", *args, "--run-dir", tmp_path / "r")
    assert out.exit_code == 1
    assert message in out.output
    assert not (tmp_path / "r").exists()


def test_logs_without_the_runs_columns_are_refused(day1_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("click,site\n1,s1\n0,s2\n")
    out = _invoke("train", "--model", "deepfm", "--init-from", day1_run, "--train", bad,
                  "--run-dir", tmp_path / "r", "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert out.exit_code == 1
    assert "app" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "r").exists()


def test_init_from_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()
    train = _logs(tmp_path / "d.csv", 100, 3, 3, 1)
    out = _invoke("train", "--model", "deepfm", "--init-from", tmp_path / "notarun",
                  "--train", train, "--run-dir", tmp_path / "r")  # fmt: skip
    assert out.exit_code == 1
    assert "notarun" in out.output and "Traceback" not in out.output


def test_other_params_are_refused_before_the_logs_are_read(day1_run: Path, tmp_path: Path) -> None:
    """The refusal came after reading the logs and growing the vocabularies, and quoted
    the run's value of a parameter it left at its default as None."""
    out = _invoke("train", "--model", "deepfm", "--init-from", day1_run, "--train",
                  tmp_path / "missing.csv", "--set", "params.embedding_dim=3",
                  "--run-dir", tmp_path / "r")  # fmt: skip
    assert out.exit_code == 1
    assert "embedding_dim=(the default)" in out.output  # not the missing file's error
