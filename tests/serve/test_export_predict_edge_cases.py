"""Edge cases of batch prediction (:func:`predict_file`, ``adrank predict``) and of the
Predictor's input handling: empty inputs, list-valued histories in frames and Parquet files,
nested columns, the output format by suffix, and streaming a file in read batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import adrank.serve.files as files
from adrank.serve.predictor import OutputExistsError, Predictor, RecordError, predict_file


@pytest.fixture(scope="module")
def predictor(synthetic_runs) -> Predictor:
    return Predictor.load(synthetic_runs.run_a)


@pytest.fixture(scope="module")
def raw(synthetic_runs) -> pl.DataFrame:
    """Raw test rows, as a CSV reader gives them (every column text), label dropped."""
    return synthetic_runs.raw_test.drop("click").head(60).cast(pl.Utf8)


def test_empty_inputs_give_empty_outputs(predictor: Predictor, raw: pl.DataFrame) -> None:
    for empty in (raw.head(0), raw.head(0).to_pandas(), raw.head(0).to_arrow(), []):
        outputs = predictor.predict_outputs(empty)
        assert list(outputs) == predictor.outputs
        assert all(v.shape == (0,) and v.dtype == np.float64 for v in outputs.values())
        assert predictor.predict(empty).shape == (0,)
    with pytest.raises(RecordError, match="'user'"):  # an empty frame is still checked
        predictor.predict(raw.head(0).drop("user"))


def test_list_histories_in_frames_score_as_joined_strings(
    predictor: Predictor, raw: pl.DataFrame
) -> None:
    expected = predictor.predict(raw)
    items = pl.col("hist").str.split("|")  # an empty history: an empty list, not [""]
    as_list = raw.with_columns(items.list.eval(pl.element().filter(pl.element() != "")))
    ints = as_list.with_columns(pl.col("hist").list.eval(pl.element().cast(pl.Int64)))
    for frame in (as_list, ints, as_list.to_pandas(), as_list.to_arrow()):
        np.testing.assert_array_equal(predictor.predict(frame), expected)
    records = as_list.to_dicts()  # the record path agrees
    np.testing.assert_allclose(predictor.predict(records), expected, rtol=0, atol=1e-6)
    nulls = as_list.with_columns(pl.lit(None, pl.List(pl.Utf8)).alias("hist"))
    np.testing.assert_array_equal(
        predictor.predict(nulls), predictor.predict(raw.with_columns(pl.lit("").alias("hist")))
    )
    split = as_list.with_columns(pl.lit(["1|2"], pl.List(pl.Utf8)).alias("hist"))
    with pytest.raises(RecordError, match="delimiter") as err:
        predictor.predict(split)
    assert err.value.field == "hist"
    floats = as_list.with_columns(pl.lit([1.5], pl.List(pl.Float64)).alias("hist"))
    with pytest.raises(RecordError, match=r"'hist'.*list of strings or integers"):
        predictor.predict(floats)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user", pl.struct(pl.lit("u1").alias("id"))),  # was scored silently as OOV
        ("ad", pl.concat_list(pl.lit("1"), pl.lit("2"))),
        ("price", pl.concat_list(pl.lit(1.0))),
    ],
)
def test_nested_values_in_scalar_columns_are_refused(
    predictor: Predictor, raw: pl.DataFrame, column: str, value: pl.Expr
) -> None:
    frame = raw.with_columns(value.alias(column))
    with pytest.raises(RecordError, match=f"'{column}'.*nested") as err:
        predictor.predict(frame)
    assert err.value.field == column


def test_output_format_follows_the_suffix(synthetic_runs, raw: pl.DataFrame, tmp_path: Path):
    source = tmp_path / "in.csv"
    raw.write_csv(source)
    run = synthetic_runs.run_a
    predict_file(run, source, tmp_path / "ref.csv")
    expected = pl.read_csv(tmp_path / "ref.csv", infer_schema=False)
    pctr = expected["pctr"].cast(pl.Float64)
    predict_file(run, source, tmp_path / "out.TSV")
    tsv = pl.read_csv(tmp_path / "out.TSV", separator="\t", infer_schema=False)
    assert tsv.columns == expected.columns
    np.testing.assert_array_equal(tsv["pctr"].cast(pl.Float64), pctr)
    for name in ("out.parquet", "out.PARQUET", "out.pq"):
        predict_file(run, source, tmp_path / name)
        np.testing.assert_array_equal(pl.read_parquet(tmp_path / name)["pctr"], pctr)
    predict_file(run, source, tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == raw.height and json.loads(lines[0])["user"] == raw["user"][0]
    np.testing.assert_array_equal([json.loads(line)["pctr"] for line in lines], pctr)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("out.txt", "out.csv.gz", "out.xlsx", "out"):  # were written as plain CSV
        with pytest.raises(ValueError, match=r"output format.*\.csv.*\.parquet"):
            predict_file(run, source, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_parquet_with_list_histories_and_nested_extra_columns(
    synthetic_runs, predictor: Predictor, raw: pl.DataFrame, tmp_path: Path
) -> None:
    run = synthetic_runs.run_a
    expected = predictor.predict(raw)
    hist = pl.col("hist").str.split("|").list.eval(pl.element().filter(pl.element() != ""))
    source = tmp_path / "in.parquet"
    raw.with_columns(hist, pl.struct(pl.col("user")).alias("meta")).write_parquet(source)
    predict_file(run, source, tmp_path / "out.parquet")
    out = pl.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_array_equal(out["pctr"], expected)
    assert out.schema["hist"] == pl.List(pl.Utf8) and out.schema["meta"] == pl.Struct
    with pytest.raises(ValueError, match=r"\['meta'\].*nested.*\.parquet"):
        predict_file(run, source, tmp_path / "out.csv")  # was scored, then failed to write
    assert not (tmp_path / "out.csv").exists()
    source = tmp_path / "hist_only.parquet"
    raw.with_columns(hist).write_parquet(source)
    predict_file(run, source, tmp_path / "hist.csv")  # a history in CSV: delimited text
    out = pl.read_csv(tmp_path / "hist.csv", infer_schema=False)
    assert out["hist"].to_list() == raw["hist"].to_list()
    np.testing.assert_array_equal(out["pctr"].cast(pl.Float64), expected)


def test_predict_file_streams_in_read_batches(
    synthetic_runs, raw: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = synthetic_runs.run_a
    source = tmp_path / "in.csv"
    raw.write_csv(source)
    predict_file(run, source, tmp_path / "whole.parquet", batch_size=8)  # the same batches
    whole = pl.read_parquet(tmp_path / "whole.parquet")
    seen: list[int] = []
    score = Predictor.predict_outputs

    def spy(self: Predictor, data: pl.DataFrame) -> dict[str, np.ndarray]:
        seen.append(len(data))
        return score(self, data)

    monkeypatch.setattr(Predictor, "predict_outputs", spy)
    monkeypatch.setattr(files, "READ_ROWS", 16)  # rows read (and held) at a time
    for name in ("batched.csv", "batched.parquet", "batched.jsonl"):
        rows, _ = predict_file(run, source, tmp_path / name, batch_size=8)
        assert rows == raw.height
    assert seen == [16, 16, 16, 12] * 3  # never the whole file at once
    batched = pl.read_parquet(tmp_path / "batched.parquet")
    assert batched.drop("pctr").equals(whole.drop("pctr"))
    np.testing.assert_allclose(batched["pctr"], whole["pctr"], rtol=0, atol=1e-6)
    csv = pl.read_csv(tmp_path / "batched.csv", infer_schema=False)
    assert csv.height == raw.height and csv.columns == whole.columns
    np.testing.assert_array_equal(csv["pctr"].cast(pl.Float64), batched["pctr"])
    jsonl = pl.read_ndjson(tmp_path / "batched.jsonl")
    np.testing.assert_array_equal(jsonl["pctr"], batched["pctr"])


def test_bad_rows_after_the_first_batch_leave_no_output(
    synthetic_runs, raw: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.csv"
    bad = raw.with_columns(
        pl.when(pl.int_range(pl.len()) == 50)
        .then(pl.lit("cheap"))
        .otherwise(pl.col("price"))
        .alias("price")
    )
    bad.write_csv(source)
    monkeypatch.setattr(files, "READ_ROWS", 16)
    out = tmp_path / "out.csv"
    with pytest.raises(Exception, match="cheap"):
        predict_file(synthetic_runs.run_a, source, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no partial file
    out.write_text("keep")
    with pytest.raises(OutputExistsError):
        predict_file(synthetic_runs.run_a, source, out)
    assert out.read_text() == "keep"


def test_adrank_predict_scores_with_an_exported_backend(
    synthetic_runs, raw: pl.DataFrame, tmp_path: Path
) -> None:
    """``adrank predict --backend torchscript`` scores with the run's exported file, as the
    server does; before the export it says to run ``adrank export``; a bad name is named."""
    import shutil

    from typer.testing import CliRunner

    from adrank.cli import app

    run = tmp_path / "run"
    shutil.copytree(synthetic_runs.run_a, run)  # the shared run stays without exports
    source = tmp_path / "in.csv"
    raw.write_csv(source)
    runner = CliRunner()

    def predict(output: str, *extra: str):
        args = ["predict", str(run), "--input", str(source), "--output", str(tmp_path / output)]
        return runner.invoke(app, [*args, *extra])

    done = predict("ts.csv", "--backend", "torchscript")
    assert done.exit_code == 1 and f"adrank export {run}" in done.output
    assert runner.invoke(app, ["export", str(run)]).exit_code == 0
    assert predict("eager.csv").exit_code == 0
    done = predict("ts.csv", "--backend", "torchscript")
    assert done.exit_code == 0, done.output
    eager = pl.read_csv(tmp_path / "eager.csv")["pctr"].to_numpy()
    np.testing.assert_allclose(
        pl.read_csv(tmp_path / "ts.csv")["pctr"].to_numpy(), eager, atol=1e-6
    )
    done = predict("x.csv", "--backend", "tensorrt")
    assert done.exit_code == 1 and "unknown backend 'tensorrt'" in done.output
