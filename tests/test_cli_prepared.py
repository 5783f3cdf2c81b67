"""``adrank train --prepared DIR`` end to end on a tiny CSV, ``adrank evaluate`` per task,
per slice and as JSON, and the clear errors of the multi-task format through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.models import available_models

SCHEMA = """
tasks:
  - {name: click, label: click}
  - {name: purchase, label: purchase, given: click}
roles: {group: user}
features:
  - {name: user, type: categorical}
  - {name: ad, type: categorical}
  - {name: price, type: numeric, normalizer: log1p}
"""
FAST = ["--set", "train.max_epochs=1", "--set", "train.num_threads=1",
        "--set", "train.batch_size=32"]  # fmt: skip


def _write(tmp_path: Path, purchase: str | None = None) -> Path:
    """A 120-row train and a 60-row test CSV (a purchase only on clicks) and the schema."""
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    for split, n in (("train", 120), ("valid", 40), ("test", 60)):
        rows = ["click,purchase,user,ad,price"]
        for i in range(n):
            click = int(i % 3 == 0)
            buy = purchase if purchase is not None and i == 3 else str(int(click and i % 5 < 2))
            ad = "z9" if split == "test" and i % 20 == 7 else f"a{i % 5}"  # z9: never trained
            rows.append(f"{click},{buy},u{i % 4},{ad},{i % 11}.5")
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "schema.yaml"


def _prepare(tmp_path: Path, out: Path) -> None:
    schema = _write(tmp_path)
    args = ["prepare", "--schema", str(schema), "--output", str(out)]
    for split in ("train", "valid", "test"):
        args += [f"--{split}", str(tmp_path / f"{split}.csv")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("prepared")
    _prepare(tmp, tmp / "data")
    return tmp / "data"


def _train(prepared: Path, run_dir: Path, model: str, *extra: str) -> str:
    args = ["train", "--prepared", str(prepared), "--model", model, "--run-dir", str(run_dir)]
    res = CliRunner().invoke(app, [*args, *FAST, *extra])
    assert res.exit_code == 0, res.output
    return res.output


def test_train_prepared_then_evaluate_and_predict(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _train(prepared, run, "lr", "--set", "task=click")
    assert "lr: best epoch 1/1" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["prepared_data"] == str(prepared.resolve())
    assert manifest["dataset"] is None
    res = CliRunner().invoke(app, ["evaluate", str(run), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)["metrics"]
    assert 0.0 <= metrics["click_auc"] <= 1.0 and "purchase_auc" not in metrics
    # the predictor reads the recorded processor: raw records in, a pctr column out
    scored = tmp_path / "scored.csv"
    res = CliRunner().invoke(
        app, ["predict", str(run), "--input", str(prepared.parent / "test.csv"),
              "--output", str(scored)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(scored.read_text().splitlines()) == 61


def test_evaluate_slices_by_feature_and_role(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(prepared, run, "lr", "--set", "task=click")
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "ad", "--json"])
    assert res.exit_code == 0, res.output
    slices = json.loads(res.output)["slices"]
    # raw values through the processor's vocabulary; test rows cycle a0..a4 (12 each), but
    # 3 of the a2 rows show z9, which training never saw
    assert set(slices) == {"all", "a0", "a1", "a2", "a3", "a4", "<unseen or missing>"}
    assert [slices[f"a{k}"]["rows"] for k in range(5)] == [12.0, 12.0, 9.0, 12.0, 12.0]
    assert slices["<unseen or missing>"]["rows"] == 3.0 and slices["all"]["rows"] == 60.0
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "warm:ad", "--json"])
    assert res.exit_code == 0, res.output
    warm = json.loads(res.output)["slices"]
    assert (warm["warm"]["rows"], warm["cold"]["rows"]) == (57.0, 3.0)
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "ad"])
    assert res.exit_code == 0, res.output
    assert "pred/obs" in res.output and "a3" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "group", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["slices"]) == 5  # "all" + 4 users
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "price"])
    assert res.exit_code == 1 and "numeric feature" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "nope"])
    assert res.exit_code == 1 and "cannot slice by 'nope'" in res.output


@pytest.mark.skipif("sharebottom" not in available_models(), reason="no multi-task model")
def test_multi_task_run_prints_per_task_metrics(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(prepared, run, "sharebottom")
    res = CliRunner().invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert "per task" in res.output
    for task in ("click", "purchase", "pctcvr"):
        assert task in res.output
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "ad", "--json"])
    slices = json.loads(res.output)["slices"]
    assert {"click_auc", "purchase_auc", "rows"} <= set(slices["a0"])
    # z9 rows have no purchase: undefined AUC / pred/obs come out as null, not NaN
    assert slices["<unseen or missing>"]["purchase_auc"] is None
    # purchase is measured on clicked rows: the slice says how many
    assert 0 < slices["all"]["purchase_rows"] < slices["all"]["rows"]
    res = CliRunner().invoke(app, ["evaluate", str(run), "--slice-by", "ad"])
    line = next(ln for ln in res.output.splitlines() if "│ all" in ln and "purchase" in ln)
    assert f"{slices['all']['purchase_rows']:,.0f}" in [c.strip() for c in line.split("│")]


def test_dataset_and_prepared_are_mutually_exclusive(prepared: Path) -> None:
    for extra in (["--dataset", "frappe", "--prepared", str(prepared)], []):
        res = CliRunner().invoke(app, ["train", "--model", "lr", *extra])
        assert res.exit_code == 1
        assert "exactly one of --dataset NAME or --prepared DIR" in res.output
    res = CliRunner().invoke(app, ["train", "--model", "lr", "--prepared", "/nonexistent/x"])
    assert res.exit_code == 1 and "not a prepared dataset" in res.output


def test_unknown_task_is_a_clean_error(prepared: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["train", "--prepared", str(prepared), "--model", "lr", "--run-dir",
              str(tmp_path / "r"), *FAST, "--set", "task=revenue"],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "revenue" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_single_task_model_without_task_is_refused(prepared: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["train", "--prepared", str(prepared), "--model", "lr", "--run-dir",
              str(tmp_path / "r"), *FAST],
    )  # fmt: skip
    assert res.exit_code == 1 and "task" in res.output


def test_missing_task_label_names_the_label(tmp_path: Path) -> None:
    schema = _write(tmp_path)
    text = (tmp_path / "train.csv").read_text().replace("click,purchase,", "click,bought,", 1)
    (tmp_path / "train.csv").write_text(text)
    res = CliRunner().invoke(
        app, ["prepare", "--schema", str(schema), "--train", str(tmp_path / "train.csv"),
              "--output", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "['purchase']" in res.output and "missing" in res.output
    # through the API (frames already in memory) the message names the task too
    import polars as pl

    from adrank.data.prepare import prepare_frames
    from adrank.data.schema import Schema, SchemaError

    frame = pl.read_csv(tmp_path / "train.csv", schema_overrides={"user": pl.String})
    with pytest.raises(SchemaError, match="task 'purchase': its label column 'purchase'"):
        prepare_frames(Schema.load(schema), {"train": frame}, tmp_path / "out2")


def test_non_binary_given_label_fails_in_prepare(tmp_path: Path) -> None:
    """A ``given`` label must be 0/1: a 2 in ``click`` is refused with the column named."""
    schema = _write(tmp_path)
    text = (tmp_path / "train.csv").read_text().splitlines()
    text[5] = "2" + text[5][1:]
    (tmp_path / "train.csv").write_text("\n".join(text) + "\n")
    res = CliRunner().invoke(
        app, ["prepare", "--schema", str(schema), "--train", str(tmp_path / "train.csv"),
              "--output", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "click" in res.output and "Traceback" not in res.output
