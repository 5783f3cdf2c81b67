"""``adrank predict`` (:func:`predict_file`) checks a raw input file as ``adrank prepare``
checks a training file: a numeric feature's value that is text or ±inf is refused with the
readers' message (file, line across read batches, column, value) instead of being scored
as a missing value, and a file lacking a numeric feature's column is refused like one
lacking a categorical column. Empty and NaN values stay missing values (the fill value),
as in training."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import adrank.serve.files as files
from adrank.cli import app
from adrank.data.readers import DataFormatError, check_numeric_columns, read_raw
from adrank.serve.predictor import Predictor, RecordError, predict_file
from tests.serve.conftest import SYNTHETIC_SCHEMA

BAD_ROW = 50  # in the fourth read batch of 16 rows


@pytest.fixture(scope="module")
def predictor(synthetic_runs) -> Predictor:
    return Predictor.load(synthetic_runs.run_a)


@pytest.fixture(scope="module")
def raw(synthetic_runs) -> pl.DataFrame:
    """Raw test rows as text, the label kept (a label column is accepted and passed on)."""
    return synthetic_runs.raw_test.head(60).cast(pl.Utf8)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Read 16 rows at a time (scored in batches of 8): line numbers cross batches."""
    monkeypatch.setattr(files, "READ_ROWS", 16)
    return 8


def _with(frame: pl.DataFrame, column: str, value: str | None, row: int = BAD_ROW) -> pl.DataFrame:
    at = pl.int_range(pl.len()) == row
    return frame.with_columns(
        pl.when(at).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


def _awkward_csv(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` as CSV with a quoted two-line value (row 3) and a blank line (after row 10):
    file lines are not data rows + 2."""
    frame = _with(frame, "user", "two\nlines", row=3)
    lines = frame.write_csv().split("\n")
    # the header, rows 0..3 (row 3 spans two lines), rows 4..10: 13 lines, then a blank one
    path.write_text("\n".join([*lines[:13], "", *lines[13:]]))
    return path


def _line_of(path: Path, needle: str) -> int:
    """The 1-based line of ``path`` holding ``needle``."""
    (line,) = [i + 1 for i, text in enumerate(path.read_text().split("\n")) if needle in text]
    return line


def _prepare_message(path: Path) -> str:
    """What ``adrank prepare``'s reader says about ``path``."""
    with pytest.raises(DataFormatError) as err:
        read_raw(path, schema=SYNTHETIC_SCHEMA)
    return str(err.value)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("price", "inf", "a finite number"),
        ("price", "-inf", "a finite number"),
        ("price", "Infinity", "a finite number"),
        ("price", "1e999", "a finite number"),  # parses to inf
        ("price", "abc", "a number"),
        ("age", "inf", "a finite number"),  # a bucketized numeric feature
        ("age", "12 years", "a number"),
    ],
)
def test_bad_numbers_are_refused_as_prepare_refuses_them(
    synthetic_runs, raw, tmp_path, small_batches, column, value, expected
) -> None:
    source = _awkward_csv(_with(raw, column, f"{value}"), tmp_path / "in.csv")
    line = _line_of(source, f",{value},")
    assert line == BAD_ROW + 4  # the header, one two-line value, one blank line
    out = tmp_path / "out.csv"
    with pytest.raises(DataFormatError) as err:
        predict_file(synthetic_runs.run_a, source, out, batch_size=small_batches)
    head = f"{source}: line {line}: column {column!r}: expected {expected}, got {value!r}"
    message = str(err.value)
    assert message.startswith(head + " (1 bad row(s) in total; ")
    assert files._SKIP_NOTE.search(message) is None and "skips no row" in message
    assert _prepare_message(source).startswith(head)  # word for word what prepare says
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output at all


def test_the_cli_names_the_file_and_line(synthetic_runs, raw, tmp_path) -> None:
    source = tmp_path / "bad.csv"
    _with(_with(raw, "price", "abc", row=5), "price", "inf", row=7).write_csv(source)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(
        app, ["predict", str(synthetic_runs.run_a), "--input", str(source), "--output", str(out)]
    )
    assert res.exit_code != 0 and not out.exists()
    text = " ".join(res.output.split())
    assert f"{source.name}: line 7: column 'price': expected a number, got 'abc'" in text
    assert "(2 bad row(s) in total;" in text and "SchemaError" not in text
    assert files._SKIP_NOTE.search(text) is None and "skips no row" in text


def test_empty_and_nan_are_missing_values_as_in_training(
    synthetic_runs, predictor, raw, tmp_path, small_batches
) -> None:
    rows = raw.drop("click")
    for row, value in ((3, ""), (20, "NaN"), (40, "nan"), (BAD_ROW, " NaN ")):
        rows = _with(rows, "price", value, row=row)
    rows = _with(rows, "age", "NaN", row=45)
    source = tmp_path / "in.csv"
    rows.write_csv(source)
    predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv", batch_size=small_batches)
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out.drop("pctr").fill_null("").equals(rows.fill_null(""))  # text kept as read
    missing = [None if v is None or v.strip().lower() in ("", "nan") else v for v in rows["price"]]
    ages = [None if v == "NaN" else v for v in rows["age"]]
    expected = predictor.predict(rows.with_columns(price=pl.Series(missing), age=pl.Series(ages)))
    np.testing.assert_allclose(out["pctr"].cast(pl.Float64), expected, rtol=0, atol=1e-6)


def test_parquet_rows_are_numbered_across_batches(
    synthetic_runs, predictor, tmp_path, small_batches
) -> None:
    rows = synthetic_runs.raw_test.drop("click").head(60)  # price and age are floats here
    source = tmp_path / "in.parquet"
    rows.with_columns(
        pl.when(pl.int_range(pl.len()) == BAD_ROW)
        .then(float("-inf"))
        .otherwise(pl.col("price"))
        .alias("price")
    ).write_parquet(source, row_group_size=10)
    with pytest.raises(DataFormatError, match=r"^\S+in\.parquet: row 51: column 'price': "):
        predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv", batch_size=small_batches)
    nan = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == BAD_ROW)
        .then(float("nan"))
        .otherwise(pl.col("price"))
        .alias("price")
    )  # pandas' missing value: scored as missing, as in training
    nan.write_parquet(source)
    predict_file(synthetic_runs.run_a, source, tmp_path / "out.parquet", batch_size=small_batches)
    expected = predictor.predict(nan.with_columns(pl.col("price").fill_nan(None)))
    out = pl.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["pctr"], expected, rtol=0, atol=1e-6)


def test_json_lines_name_the_record(synthetic_runs, raw, tmp_path, small_batches) -> None:
    source = tmp_path / "in.jsonl"
    lines = _with(raw.drop("click"), "price", "-inf").write_ndjson().splitlines()
    source.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n")  # a blank line
    with pytest.raises(DataFormatError) as err:
        predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv", batch_size=small_batches)
    assert str(err.value).startswith(
        f"{source}: record {BAD_ROW + 1}: column 'price': expected a finite number, got '-inf'"
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_missing_numeric_column_is_refused(
    synthetic_runs, predictor, raw, tmp_path, suffix
) -> None:
    rows = raw.drop("click")
    source = tmp_path / f"in{suffix}"
    writers = {".csv": "write_csv", ".parquet": "write_parquet", ".jsonl": "write_ndjson"}

    def refused(frame: pl.DataFrame, names: list[str]) -> str:
        getattr(frame, writers[suffix])(source)
        with pytest.raises(RecordError) as err:
            predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv")
        message = str(err.value)
        assert message.startswith(
            f"{source}: required column(s) {names} are missing from the input; it has "
        )
        assert not (tmp_path / "out.csv").exists()
        return message

    assert "fill value" in refused(rows.drop("price"), ["price"])
    refused(rows.drop("age", "price"), ["price", "age"])
    refused(rows.drop("ad", "age"), ["ad", "age"])  # with a categorical one: all named
    # a sequence column may still be left out (an empty history), in a file too
    getattr(rows.drop("hist"), writers[suffix])(source)
    predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv")
    # in-code frames and records keep the documented rule: a numeric field may be left out
    np.testing.assert_array_equal(
        predictor.predict(rows.drop("price")),
        predictor.predict(rows.with_columns(price=pl.lit(None, pl.Float64))),
    )


def test_the_skip_note_is_replaced_for_every_reader_error(synthetic_runs, tmp_path) -> None:
    source = tmp_path / "ragged.csv"
    source.write_text("user,ad,creative,site,price,age,hist\nu1,1,1-0,s1,1.0,20,\nu2,1\n")
    with pytest.raises(DataFormatError) as err:
        predict_file(synthetic_runs.run_a, source, tmp_path / "out.csv")
    message = str(err.value)
    assert re.match(rf"{re.escape(str(source))}: line 3: expected 7 fields, got 2", message)
    assert files._SKIP_NOTE.search(message) is None and "skips no row" in message


def test_check_numeric_columns_checks_without_casting() -> None:
    frame = pl.DataFrame({"x": ["1", "", " 2 ", "NaN", None], "y": ["a", "b", "c", "d", "e"]})
    lines = np.arange(5, dtype=np.int64) + 10
    out, skipped, examples = check_numeric_columns(frame, ["x", "absent"], "f.csv", lines)
    assert out.equals(frame) and skipped == 0 and examples == []
    bad = frame.with_columns(pl.Series("x", ["1", "inf", "x", "2", None]))
    with pytest.raises(DataFormatError, match=r"^f\.csv: line 11: column 'x': expected a finite"):
        check_numeric_columns(bad, ["x"], "f.csv", lines)
    out, skipped, examples = check_numeric_columns(bad, ["x"], "f.csv", lines, bad_rows="skip")
    assert out["x"].to_list() == ["1", "2", None] and skipped == 2
    assert examples == [
        "line 11: column 'x': expected a finite number, got 'inf'",
        "line 12: column 'x': expected a number, got 'x'",
    ]
