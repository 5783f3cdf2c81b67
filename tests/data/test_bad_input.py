"""Bad input to the data pipeline and the CLI: each case gets a clear error naming the file,
the row or column and the problem (or a documented fallback), never a traceback, a silent
change of the data or an overwritten file of the user's."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import Schema, SchemaError

SCHEMA = """
tasks: [click]
features:
  - {name: user, type: categorical}
  - {name: price, type: numeric}
"""


def prepare(tmp: Path, train: Path, schema: str = SCHEMA, *extra: str):
    (tmp / "schema.yaml").write_text(schema)
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--train", str(train),
            "--output", str(tmp / "prepared"), *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def assert_clean_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, result.output)


# ---- labels ----------------------------------------------------------------------------


def test_regression_task_reads_real_valued_labels(tmp_path: Path) -> None:
    """A regression task's label is a real number (docs/schema.md), not 0/1."""
    schema = """
tasks: [{name: watch, label: watch, type: regression}]
features: [{name: user, type: categorical}]
"""
    train = tmp_path / "train.csv"
    train.write_text("watch,user\n0.5,u1\n3.25,u2\n0,u1\n")
    result = prepare(tmp_path, train, schema)
    assert result.exit_code == 0, result.output
    labels = pl.read_parquet(tmp_path / "prepared" / "train.parquet")["watch"].to_list()
    assert labels == [0.5, 3.25, 0.0]


@pytest.mark.parametrize("bad", ["abc", "inf"])
def test_regression_label_that_is_no_finite_number_is_named(tmp_path: Path, bad: str) -> None:
    schema = (
        "tasks: [{name: watch, type: regression}]\nfeatures: [{name: user, type: categorical}]\n"
    )
    train = tmp_path / "train.csv"
    train.write_text(f"watch,user\n0.5,u1\n{bad},u2\n")
    result = prepare(tmp_path, train, schema)
    assert_clean_error(result, "train.csv: line 3", "'watch'", "a finite number label", bad)


@pytest.mark.parametrize("bad", [2, -1, None, float("nan")])
def test_prepare_frames_refuses_binary_labels_outside_0_1(tmp_path: Path, bad: object) -> None:
    """The Python path (docs: pl.read_csv + prepare_frames) checked no label: 2, -1, a
    missing label or NaN were written to the prepared data as they were."""
    schema = Schema.from_dict(yaml_schema())
    frame = pl.DataFrame(
        {"click": [1.0, 0.0, bad], "user": ["a", "b", "c"], "price": [1.0, 2.0, 3.0]},
        strict=False,
    )
    with pytest.raises(SchemaError, match=r"label column 'click' must hold a binary 0/1.*row 2"):
        prepare_frames(schema, {"train": frame}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def yaml_schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA)


def test_string_labels_in_python_get_a_schema_error(tmp_path: Path) -> None:
    frame = pl.DataFrame({"click": ["1", "0", "yes"], "user": ["a", "b", "c"], "price": [1, 2, 3]})
    with pytest.raises(SchemaError, match=r"'click'.*'yes' in row 2"):
        prepare_frames(Schema.from_dict(yaml_schema()), {"train": frame}, tmp_path / "out")


# ---- schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("fill", [".nan", ".inf", "-.inf"])
def test_numeric_fill_value_must_be_finite(tmp_path: Path, fill: str) -> None:
    """fill_value: .nan made every missing entry NaN, and a z-score turned the column NaN."""
    schema = f"tasks: [click]\nfeatures:\n  - {{name: price, type: numeric, fill_value: {fill}}}\n"
    train = tmp_path / "train.csv"
    train.write_text("click,price\n1,\n0,2\n")
    result = prepare(tmp_path, train, schema)
    assert_clean_error(result, "schema.yaml", "feature 'price'", "'fill_value' must be a finite")


def test_feature_reading_a_label_column_is_refused() -> None:
    """`source: click` fed the label to the model as a feature (target leakage)."""
    with pytest.raises(SchemaError, match=r"\['click'\] are declared both as label and feature"):
        Schema.from_dict(
            {
                "tasks": ["click"],
                "features": [{"name": "c2", "type": "categorical", "source": "click"}],
            }
        )


@pytest.mark.parametrize("source", [5, ""])
def test_feature_source_must_be_a_column_name(source: object) -> None:
    with pytest.raises(SchemaError, match=r"feature 'u': 'source' must be a column name"):
        Schema.from_dict(
            {
                "tasks": ["click"],
                "features": [{"name": "u", "type": "categorical", "source": source}],
            }
        )


def test_schema_name_must_be_a_scalar() -> None:
    with pytest.raises(SchemaError, match=r"'name' must be a non-empty string"):
        Schema.from_dict(
            {"name": ["a"], "tasks": ["click"], "features": [{"name": "u", "type": "categorical"}]}
        )


def test_schema_path_that_is_a_directory_or_binary(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("click,user,price\n1,u1,1\n")
    args = ["prepare", "--schema", str(tmp_path), "--train", str(train), "--output",
            str(tmp_path / "o")]  # fmt: skip
    assert_clean_error(CliRunner().invoke(app, args), "schema path is not a file")
    (tmp_path / "schema.yaml").write_bytes(b"tasks: [\xff\xfe]\n")
    args[2] = str(tmp_path / "schema.yaml")
    assert_clean_error(CliRunner().invoke(app, args), "cannot parse schema file", "schema.yaml")


# ---- files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "column", [pa.array([["a"], ["b"]]), pa.array([{"x": 1}, {"x": 2}])], ids=["list", "struct"]
)
def test_parquet_nested_column_for_a_categorical_feature(tmp_path: Path, column) -> None:
    """A list column crashed with a polars traceback; a struct was encoded as its text."""
    train = tmp_path / "train.parquet"
    pq.write_table(pa.table({"click": [1, 0], "user": column, "price": [1.0, 2.0]}), train)
    result = prepare(tmp_path, train)
    assert_clean_error(result, "train.parquet: column 'user' has dtype", "one scalar value")


def test_parquet_date_column_is_not_read_as_a_number(tmp_path: Path) -> None:
    train = tmp_path / "train.parquet"
    dates = pa.array([1, 2], pa.date32())
    pq.write_table(pa.table({"click": [1, 0], "user": ["a", "b"], "price": dates}), train)
    assert_clean_error(prepare(tmp_path, train), "column 'price' has dtype Date")


def test_libfm_token_with_two_colons_is_bad(tmp_path: Path) -> None:
    """'4:1:2' was read as index 4, value 1."""
    path = tmp_path / "train.libfm"
    path.write_text("1 3:1 5:1\n0 4:1:2 6:2\n")
    with pytest.raises(DataFormatError, match=r"line 2: column 'field_1'.*'4:1:2'"):
        read_raw(path, fmt="libfm")
    skipped = read_raw(path, fmt="libfm", bad_rows="skip")
    assert skipped.skipped_rows == 1 and skipped.frame.height == 1


def test_header_only_split_is_an_error_with_auto_header(tmp_path: Path) -> None:
    """A header-only valid file became an empty valid split without a word."""
    (tmp_path / "train.csv").write_text("click,user,price\n1,u1,1\n0,u2,2\n")
    (tmp_path / "valid.csv").write_text("click,user,price\n")
    result = prepare(
        tmp_path, tmp_path / "train.csv", SCHEMA, "--valid", str(tmp_path / "valid.csv")
    )
    assert_clean_error(result, "valid.csv: file has a header but no rows")


# ---- roles -----------------------------------------------------------------------------


ROLE_SCHEMA = """
tasks: [click]
roles: {weight: w, time: t}
features: [{name: user, type: categorical}]
"""


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("0,u2,-1,5", "column 'w' (role 'weight'): expected a finite number >= 0, got '-1'"),
        ("0,u2,1,yesterday", "column 't' (role 'time'): expected a finite number (e.g. Unix "
         "seconds) or an ISO-8601 date/time (2023-11-14T22:17:42Z), got 'yesterday'"),
        ("0,u2,,5", "column 'w': missing value (role 'weight' needs a finite number >= 0)"),
    ],
)  # fmt: skip
def test_bad_role_values_name_file_line_and_value(tmp_path: Path, row: str, message: str) -> None:
    """Role values were checked by the processor alone: no file, a 0-based row, the value
    shown as None for text, and --bad-rows skip did not apply."""
    train = tmp_path / "train.csv"
    train.write_text(f"click,user,w,t\n1,u1,1,4\n{row}\n1,u3,2,6\n")
    assert_clean_error(prepare(tmp_path, train, ROLE_SCHEMA), "train.csv: line 3: " + message)
    skipped = prepare(tmp_path, train, ROLE_SCHEMA, "--bad-rows", "skip")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 bad row," in " ".join(skipped.output.split())
    encoded = pl.read_parquet(tmp_path / "prepared" / "train.parquet")
    assert encoded["__time__"].to_list() == [4, 6]


def test_propensity_outside_its_range_names_the_line(tmp_path: Path) -> None:
    schema = "tasks: [click]\nroles: {propensity: p}\nfeatures: [{name: user, type: categorical}]\n"
    train = tmp_path / "train.csv"
    train.write_text("click,user,p\n1,u1,0.5\n0,u2,0\n")
    assert_clean_error(
        prepare(tmp_path, train, schema), "line 3: column 'p' (role 'propensity'): expected a "
        "number in (0, 1], got '0'"
    )  # fmt: skip


@pytest.mark.parametrize("bad", ["0", "-2", "1.5"])
def test_positions_below_one_or_fractional_are_refused_at_prepare_time(
    tmp_path: Path, bad: str
) -> None:
    """Positions count from 1 (the top slot): a 0-based file is refused when it is prepared,
    naming the line, instead of at the first training batch of a position method."""
    schema = "tasks: [click]\nroles: {position: pos}\nfeatures: [{name: user, type: categorical}]\n"
    train = tmp_path / "train.csv"
    train.write_text(f"click,user,pos\n1,u1,1\n0,u2,{bad}\n1,u3,3\n")
    assert_clean_error(
        prepare(tmp_path, train, schema), f"line 3: column 'pos' (role 'position'): expected a "
        f"whole number >= 1 (1 = the top slot; add 1 to 0-based positions), got '{bad}'"
    )  # fmt: skip


def test_processor_refuses_a_position_below_one_in_a_frame() -> None:
    """Frames given in code (no reader) meet the same rule in the processor."""
    from adrank.data.processor import FeatureProcessor

    schema = Schema.from_dict(
        {"tasks": ["click"], "roles": {"position": "pos"},
         "features": [{"name": "user", "type": "categorical"}]}
    )  # fmt: skip
    frame = pl.DataFrame({"click": [1, 0], "user": ["a", "b"], "pos": [1, 0]})
    with pytest.raises(SchemaError, match=r"role 'position' \(column 'pos'\) must be a whole"):
        FeatureProcessor(schema).fit(frame).transform(frame)


def test_processor_role_error_shows_the_raw_value() -> None:
    from adrank.data.processor import FeatureProcessor

    schema = Schema.from_dict(
        {
            "tasks": ["click"],
            "roles": {"time": "t"},
            "features": [{"name": "u", "type": "categorical"}],
        }
    )
    frame = pl.DataFrame({"click": [1, 0], "u": ["a", "b"], "t": ["5", "yesterday"]})
    with pytest.raises(SchemaError, match=r"found 'yesterday' in row 1"):
        FeatureProcessor(schema).fit(frame).transform(frame)


# ---- outputs and other commands --------------------------------------------------------


def test_synth_never_replaces_an_existing_file_unasked(tmp_path: Path) -> None:
    mine = tmp_path / "train.csv"
    mine.write_text("precious\n")
    args = ["datasets", "synth", "criteo", "--rows", "10", "--output", str(mine)]
    assert_clean_error(CliRunner().invoke(app, args), "already exists", "--overwrite")
    assert mine.read_text() == "precious\n"
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert pq.read_metadata(mine).num_rows == 10


def test_synth_output_directory_and_nan_scale_are_clean_errors(tmp_path: Path) -> None:
    base = ["datasets", "synth", "criteo", "--rows", "10", "--output"]
    assert_clean_error(CliRunner().invoke(app, [*base, str(tmp_path)]), "is a directory")
    result = CliRunner().invoke(
        app, [*base, str(tmp_path / "s.parquet"), "--cardinality-scale", "nan"]
    )
    assert_clean_error(result, "--cardinality-scale must be a finite number")
    assert not (tmp_path / "s.parquet").exists()


def test_corrupt_prepared_metadata_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"stats\.json: unreadable prepared-data metadata"):
        PreparedData.open(tmp_path)
    result = CliRunner().invoke(app, ["train", "--model", "lr", "--prepared", str(tmp_path)])
    assert_clean_error(result, "stats.json: unreadable prepared-data metadata")


def test_evaluate_plots_into_a_file_is_a_clean_error(tmp_path: Path) -> None:
    rows = [f"{i % 2},u{i % 5},{i}" for i in range(60)]
    (tmp_path / "train.csv").write_text("click,user,price\n" + "\n".join(rows) + "\n")
    assert prepare(tmp_path, tmp_path / "train.csv", SCHEMA, "--valid",
                   str(tmp_path / "train.csv"), "--test", str(tmp_path / "train.csv")
                   ).exit_code == 0  # fmt: skip
    run = tmp_path / "run"
    trained = CliRunner().invoke(
        app,
        ["train", "--model", "lr", "--prepared", str(tmp_path / "prepared"), "--run-dir",
         str(run), "--set", "train.max_epochs=1", "--set", "train.num_threads=1"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    mine = tmp_path / "notes.txt"
    mine.write_text("precious")
    result = CliRunner().invoke(app, ["evaluate", str(run), "--plots", str(mine)])
    assert_clean_error(result, "notes.txt")
    assert mine.read_text() == "precious"
    assert json.loads((run / "manifest.json").read_text())


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_a_file_read_as_one_column_hints_at_its_separator(
    tmp_path: Path, sep: str, shown: str
) -> None:
    train = tmp_path / "train.csv"
    train.write_text(sep.join(["click", "user", "price"]) + "\n" + sep.join(["1", "u1", "2"]))
    result = prepare(tmp_path, train)
    assert_clean_error(result, "required by the schema are missing", f"is its separator {shown}?")


def test_a_header_with_a_repeated_name_is_named_as_such_under_auto(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("click,user,user\n1,u1,2\n")
    result = prepare(tmp_path, train)
    assert_clean_error(result, "looks like data", "it repeats the name(s) ['user']: rename them")
    train.write_text("1,2,3\n0,4,5\n")  # plain data: no such hint
    result = prepare(tmp_path, train)
    assert_clean_error(result, "looks like data")
    assert "repeats" not in result.output


@pytest.mark.parametrize(
    ("normalizer", "expected"),
    [("none", 0.0), ("log1p", 89.80081939697266), ("standard", None), ("minmax", 1.0)],
)
def test_numbers_beyond_float32_never_become_inf(
    normalizer: str, expected: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    """1e39 is finite in a CSV (float64) but inf in float32: with no normalizer it was
    stored as inf and the model trained (and served) NaN. It now takes the fill value, with
    a warning; a normalizer that brings it into range (log1p) keeps it."""
    from adrank.data.processor import FeatureProcessor

    schema = Schema.from_dict(
        {
            "tasks": ["click"],
            "features": [{"name": "price", "type": "numeric", "normalizer": normalizer}],
        }
    )
    frame = pl.DataFrame({"click": [1, 0, 1], "price": [1.5, 1e39, 2.5]})
    out = FeatureProcessor(schema).fit(frame).transform(frame)["price"].to_numpy()
    assert out.dtype.name == "float32" and bool(pl.Series(out).is_finite().all())
    if expected is not None:
        assert out[1] == pytest.approx(expected)
    overflowed = normalizer == "none"
    assert ("beyond float32's range" in caplog.text) == overflowed
