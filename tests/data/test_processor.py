from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.data.processor import GROUP_COLUMN, FeatureProcessor, NotFittedError
from adrank.data.readers import read_raw
from adrank.data.schema import OOV_ID, PAD_ID, Schema, SchemaError


def make_schema(**overrides) -> Schema:
    data = {
        "labels": ["y"],
        "group": "user",
        "features": [
            {"name": "user", "type": "categorical", "min_count": 2},
            {"name": "item", "type": "categorical"},
            {"name": "ad", "type": "categorical", "hash_buckets": 7},
            {"name": "price", "type": "numeric", "normalizer": "standard", "fill_value": 1.0},
            {"name": "price_bucket", "type": "numeric", "buckets": 2, "source": "price"},
            {"name": "hist", "type": "sequence", "max_len": 3, "share_vocab_with": "item"},
        ],
    }
    data.update(overrides)
    return Schema.from_dict(data)


@pytest.fixture
def train() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "y": [1, 0, 1, 0, 1],
            "user": ["a", "a", "b", None, "a"],
            "item": ["p", "q", "p", "r", "p"],
            "ad": ["z", "w", None, "z", "v"],
            "price": [1.0, 2.0, None, 4.0, 3.0],
            "hist": ["p|q|r|p", "", None, "q||r", "s"],
        }
    )


def test_vocab_min_count_and_frequency_order(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    assert proc.vocab_["user"] == ["a"]  # "b" seen once < min_count 2
    # item and hist share one table: p=5, q=2, r=2, s=1; ties broken by value
    assert proc.vocab_["item"] == ["p", "q", "r", "s"]
    out = proc.transform(train)
    assert out["user"].to_list() == [2, 2, OOV_ID, OOV_ID, 2]
    assert out["item"].to_list() == [2, 3, 2, 4, 2]


def test_oov_and_missing_values(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    test = pl.DataFrame(
        {
            "y": [0],
            "user": ["unseen"],
            "item": ["zzz"],
            "ad": [None],
            "price": [None],
            "hist": ["zzz|p"],
        }
    )
    out = proc.transform(test).row(0, named=True)
    assert out["user"] == OOV_ID
    assert out["item"] == OOV_ID
    assert out["ad"] == OOV_ID
    assert out["price_bucket"] == OOV_ID
    # missing numeric takes fill value 1.0, then standardized with training stats
    filled = np.array([1.0, 2.0, 1.0, 4.0, 3.0])
    assert out["price"] == pytest.approx((1.0 - filled.mean()) / filled.std(), rel=1e-6)
    assert list(out["hist"]) == [PAD_ID, OOV_ID, 2]


def test_hashing_is_stable_crc32(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    out = proc.transform(train)
    expected = [zlib.crc32(v.encode()) % 7 + 2 for v in ["z", "w"]]
    assert out["ad"].to_list()[:2] == expected
    assert proc.feature_map().field("ad").vocab_size == 9


def test_sequences_truncate_keep_last_and_pad(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    hist = proc.transform(train)["hist"].to_list()
    p, q, r, s = 2, 3, 4, 5
    assert list(hist[0]) == [q, r, p]  # last 3 of p|q|r|p
    assert list(hist[1]) == [0, 0, 0]  # empty string
    assert list(hist[2]) == [0, 0, 0]  # null
    assert list(hist[3]) == [0, q, r]  # empty token dropped, left padded
    assert list(hist[4]) == [0, 0, s]
    right = make_schema()
    feats = list(right.to_dict()["features"])
    feats[-1] = {**feats[-1], "padding": "right"}
    proc_r = FeatureProcessor(make_schema(features=feats)).fit(train)
    assert list(proc_r.transform(train)["hist"].to_list()[3]) == [q, r, 0]


def test_numeric_buckets_and_normalizers(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    out = proc.transform(train)
    # quantile median of [1, 2, 4, 3] = 2.5 -> buckets {<2.5: 2, >=2.5: 3}, missing -> OOV
    assert out["price_bucket"].to_list() == [2, 2, OOV_ID, 3, 3]
    for norm, fn in [
        ("minmax", lambda x: x / 4),  # fill 0 -> min 0, max 4
        ("log1p", np.log1p),
        ("none", lambda x: x),
    ]:
        schema = Schema.from_dict(
            {
                "labels": ["y"],
                "features": [{"name": "price", "type": "numeric", "normalizer": norm}],
            }
        )
        got = FeatureProcessor(schema).fit(train).transform(train)["price"].to_numpy()
        filled = np.array([1.0, 2.0, 0.0, 4.0, 3.0])
        np.testing.assert_allclose(got, fn(filled), rtol=1e-6)


def test_save_load_round_trip(train: pl.DataFrame, tmp_path: Path) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    proc.save(tmp_path / "proc")
    assert (tmp_path / "proc" / "processor.json").exists()
    assert not list((tmp_path / "proc").glob("*.pkl"))
    again = FeatureProcessor.load(tmp_path / "proc")
    assert again.transform(train).equals(proc.transform(train))
    assert again.feature_map() == proc.feature_map()


def test_load_rejects_other_format_version(train: pl.DataFrame, tmp_path: Path) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    proc.save(tmp_path)
    path = tmp_path / "processor.json"
    path.write_text(path.read_text().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(ValueError, match="format version 99"):
        FeatureProcessor.load(tmp_path)


def test_feature_map_and_group(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema()).fit(train)
    fm = proc.feature_map()
    assert fm.names == ["user", "item", "ad", "price", "price_bucket", "hist"]
    assert fm.field("hist").table == "item"
    assert fm.field("hist").vocab_size == fm.field("item").vocab_size == 6
    assert fm.field("price").kind == "numeric"
    assert fm.field("price_bucket").kind == "categorical"
    assert fm.group == GROUP_COLUMN
    groups = proc.transform(train)[GROUP_COLUMN].to_list()
    assert groups[0] == groups[1] == groups[4] != groups[2]


def test_transform_records_and_errors(train: pl.DataFrame) -> None:
    proc = FeatureProcessor(make_schema())
    with pytest.raises(NotFittedError):
        proc.transform(train)
    proc.fit(train)
    recs = proc.transform_records([{"user": "a", "item": "q", "price": "2"}, {"user": "x"}])
    assert recs["user"].to_list() == [2, OOV_ID]
    assert recs["item"].to_list() == [3, OOV_ID]
    with pytest.raises(SchemaError, match="'price' must be a number"):
        proc.transform_records([{"price": "cheap"}])
    with pytest.raises(SchemaError, match=r"\['item'\]"):
        proc.transform(train.drop("item"))


def test_non_numeric_string_in_numeric_column(train: pl.DataFrame) -> None:
    bad = train.with_columns(pl.Series("price", ["1", "x", None, "4", "3"]))
    with pytest.raises(SchemaError, match="non-numeric value 'x' at row 1"):
        FeatureProcessor(make_schema()).fit(bad)


def test_float_ids_from_parquet_match_the_ids_requests_and_csv_send(tmp_path: Path) -> None:
    """pandas writes an integer id column with missing values as float64. Read as "1.0",
    its vocabulary would never match the ``1`` a serving request or a CSV file sends, and
    every served row would be unseen (OOV) without a word."""
    schema = Schema.from_dict(
        {"tasks": ["click"], "features": [{"name": "user", "type": "categorical"}]}
    )
    path = tmp_path / "train.parquet"
    pl.DataFrame(
        {"click": [1, 0, 1, 0, 1], "user": [1.0, 2.0, None, 3.5, float("nan")]}
    ).write_parquet(path)
    frame = read_raw(path, schema=schema).frame
    assert frame["user"].to_list() == ["1", "2", None, "3.5", None]
    proc = FeatureProcessor(schema).fit(frame)
    fitted = proc.transform(frame)["user"].to_list()
    assert OOV_ID not in (fitted[0], fitted[1], fitted[3]) and fitted[2] == fitted[4] == OOV_ID
    # the same ids as a request sends them (ints, strings) and as floats in memory
    ints = proc.transform_records([{"user": 1}, {"user": 2}, {"user": "3.5"}])["user"]
    in_memory = proc.transform(pl.DataFrame({"click": [0, 1, 0], "user": [1.0, 2.0, 3.5]}))
    in_memory = in_memory["user"]
    assert ints.to_list() == in_memory.to_list() == [fitted[0], fitted[1], fitted[3]]
