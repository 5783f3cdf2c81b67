"""Declared transforms: derived columns computed identically at fit, transform and serving."""

from __future__ import annotations

import polars as pl
import pytest

from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema, SchemaError


def criteo_numeric_to_categorical(column: str) -> pl.Expr:
    """The Criteo recipe's bucketing as its builder computed it before it became a
    declared transform (definition version 1)."""
    v = pl.col(column).cast(pl.Float64, strict=False).fill_null(0.0)
    bucket = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v)
    return bucket.cast(pl.Int64).cast(pl.String).alias(column)


SCHEMA = {
    "tasks": [{"name": "click", "label": "click"}],
    "transforms": [
        {"name": "hour_of_day", "fn": "substring", "input": "hour", "start": 6, "length": 2},
        {"name": "weekday", "fn": "datetime_part", "input": "hour", "format": "%y%m%d%H"},
        {"name": "I1", "fn": "log_square_bucket", "input": "I1"},
        {"name": "site_x_app", "fn": "cross", "input": ["site", "app"]},
    ],
    "features": [
        {"name": "hour_of_day", "type": "categorical"},
        {"name": "weekday", "type": "categorical"},
        {"name": "I1", "type": "categorical"},
        {"name": "site_x_app", "type": "categorical"},
    ],
}

RAW = pl.DataFrame(
    {
        "click": [1, 0, 0, 1],
        "hour": ["14102100", "14102213", "14102523", None],
        "I1": ["5", "", "1", "300"],
        "site": ["s1", "s2", "s1", None],
        "app": ["a", "a", "b", "c"],
    }
)


def test_schema_reads_the_transform_inputs_and_round_trips() -> None:
    schema = Schema.from_dict(SCHEMA)
    assert schema.source_columns() == ["click", "hour", "I1", "site", "app"]
    assert Schema.from_dict(schema.to_dict()) == schema


def test_transforms_match_the_recipes_and_apply_to_serving_records() -> None:
    proc = FeatureProcessor(Schema.from_dict(SCHEMA)).fit(RAW)
    derived = proc.transform(RAW)
    # the Criteo recipe's own expression gives the same buckets
    expected = RAW.select(criteo_numeric_to_categorical("I1"))["I1"]
    lookup = dict(zip(proc.vocab_["I1"], range(2, 100), strict=False))
    assert derived["I1"].to_list() == [lookup[v] for v in expected.to_list()]
    # 2014-10-21 is a Tuesday (2), 2014-10-25 a Saturday (6)
    weekday = dict(zip(proc.vocab_["weekday"], range(2, 100), strict=False))
    assert derived["weekday"].to_list()[:3] == [weekday["2"], weekday["3"], weekday["6"]]
    assert derived["weekday"][3] == 1  # missing hour -> OOV
    # one serving record (raw inputs only) encodes exactly like its training row
    record = {"hour": "14102213", "I1": "", "site": "s2", "app": "a"}
    served = proc.transform_records([record])
    row = derived.slice(1, 1).drop("click")
    assert served.select(row.columns).to_dicts() == row.to_dicts()


def test_bad_values_and_declarations_get_clear_errors() -> None:
    proc = FeatureProcessor(Schema.from_dict(SCHEMA)).fit(RAW)
    bad = RAW.with_columns(pl.Series("hour", ["14102100", "1410XX13", "14102523", None]))
    with pytest.raises(SchemaError, match=r"'weekday'.*'1410XX13'.*'hour' in row 1"):
        proc.transform(bad)
    bad = RAW.with_columns(pl.Series("I1", ["5", "five", "1", "3"]))
    with pytest.raises(SchemaError, match="'five' of column 'I1' in row 1"):
        proc.transform(bad)
    wrong = dict(SCHEMA, transforms=[{"name": "x", "fn": "eval", "input": "hour"}])
    with pytest.raises(SchemaError, match="unknown fn 'eval'"):
        Schema.from_dict(wrong)
    wrong = dict(SCHEMA, transforms=[{"name": "x", "fn": "substring", "input": "h", "len": 2}])
    with pytest.raises(SchemaError, match=r"unknown key\(s\) \['len'\]"):
        Schema.from_dict(wrong)
    with pytest.raises(SchemaError, match=r"columns \[.hour.\] are missing"):
        proc.transform(RAW.drop("hour"), require_labels=False)


def test_float_id_inputs_cross_like_the_ids_a_request_sends() -> None:
    """pandas' int-with-missing ids arrive as floats: crossed as "1.0_a" in training, they
    would never match the "1_a" of a request sending the id 1."""
    raw = RAW.with_columns(pl.Series("site", [1.0, 2.0, 1.0, None]))
    proc = FeatureProcessor(Schema.from_dict(SCHEMA)).fit(raw)
    assert sorted(proc.vocab_["site_x_app"]) == ["1_a", "1_b", "2_a"]
    derived = proc.transform(raw)
    served = proc.transform_records([{"hour": "14102213", "I1": "", "site": 2, "app": "a"}])
    assert served["site_x_app"].to_list() == derived["site_x_app"].to_list()[1:2]
    assert served["site_x_app"][0] > 1  # a fitted id, not the unseen one
