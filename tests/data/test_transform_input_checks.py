"""A transform's numeric input (Criteo's I1..I13 through log_square_bucket) is checked as a
numeric feature is: ``inf`` crashed prepare and predict with a raw polars
InvalidOperationError (a strict cast to Int64), ``NaN`` too, and text that is not a number
was a TransformError naming a 0-based row of a batch and no file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from adrank.cli import app
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import Schema
from adrank.data.transforms import TransformError, apply_transforms

SCHEMA = """
tasks: [click]
transforms:
  - {name: I1, fn: log_square_bucket, input: I1}
features:
  - {name: ad, type: categorical}
  - {name: I1, type: categorical}
"""


def _csv(path: Path, values: list[str]) -> Path:
    rows = ["click,ad,I1"] + [f"{i % 2},a{i % 3},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(("value", "expected"), [("inf", "a finite number"), ("abc", "a number")])
def test_prepare_names_the_line_of_a_bad_transform_input(
    tmp_path: Path, value: str, expected: str
) -> None:
    path = _csv(tmp_path / "train.csv", ["5", "", value, "7"])
    with pytest.raises(DataFormatError, match=rf"train.csv: line 4: column 'I1'.*{expected}"):
        read_raw(path, schema=Schema.from_dict(yaml.safe_load(SCHEMA)))


def test_nan_and_empty_are_missing_and_text_is_kept() -> None:
    schema = Schema.from_dict(yaml.safe_load(SCHEMA))
    frame = pl.DataFrame({"I1": ["NaN", "", None, "2", "100"]})
    out = apply_transforms(frame, schema.transforms)["I1"].to_list()
    assert out == ["0", "0", "0", "2", "21"]  # floor(log(100)^2) = 21
    with pytest.raises(TransformError, match="cannot use value 'inf'"):
        apply_transforms(pl.DataFrame({"I1": ["3", "inf"]}), schema.transforms)
    with pytest.raises(TransformError, match="cannot use value inf"):  # a float column
        apply_transforms(pl.DataFrame({"I1": [3.0, float("inf")]}), schema.transforms)


def test_predict_refuses_a_bad_transform_input_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    train = _csv(tmp_path / "train.csv", [str(i % 40) for i in range(200)])
    prep = ["prepare", "--schema", str(tmp_path / "schema.yaml"), "--train", str(train)]
    assert CliRunner().invoke(app, [*prep, "--output", str(tmp_path / "p")]).exit_code == 0
    run = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(tmp_path / "p"), "--model", "lr", "--run-dir", str(run),
         "--set", "train.max_epochs=1", "--set", "train.batch_size=32"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    scored = tmp_path / "scored.csv"
    good = _csv(tmp_path / "good.csv", ["NaN", "", "12"])
    res = CliRunner().invoke(
        app, ["predict", str(run), "--input", str(good), "--output", str(scored)]
    )
    assert res.exit_code == 0, res.output
    assert pl.read_csv(scored).height == 3
    bad = _csv(tmp_path / "bad.csv", ["1", "2", "inf"])
    res = CliRunner().invoke(
        app, ["predict", str(run), "--input", str(bad), "--output", str(tmp_path / "o.csv")]
    )
    assert res.exit_code != 0
    assert "bad.csv: line 4: column 'I1'" in " ".join(res.output.split()), res.output


def test_an_infinite_numeric_value_in_a_frame_is_refused_not_filled() -> None:
    """Files and HTTP refused ±inf but a frame in code (CTRClassifier, Predictor.predict)
    took the fill value silently: the processor refuses it too; NaN stays missing."""
    from adrank.data.processor import FeatureProcessor

    schema = Schema.from_dict(
        {"tasks": ["click"], "features": [{"name": "ad", "type": "categorical"},
                                          {"name": "price", "type": "numeric"}]}
    )  # fmt: skip
    frame = pl.DataFrame({"click": [1, 0, 1], "ad": ["a", "b", "a"], "price": [1.0, 2.0, 3.0]})
    proc = FeatureProcessor(schema).fit(frame)
    nan = frame.with_columns(pl.Series("price", [1.0, float("nan"), None]))
    assert proc.transform(nan)["price"].is_finite().all()
    inf = frame.with_columns(pl.Series("price", [1.0, 2.0, float("-inf")]))
    with pytest.raises(TransformError, match=r"'price' is -inf in row 2; .* must be finite"):
        proc.transform(inf)
