from __future__ import annotations

from pathlib import Path

import pytest

from adrank.data.schema import (
    CategoricalFeature,
    NumericFeature,
    Schema,
    SchemaError,
    SequenceFeature,
)

BASE = {
    "labels": ["click"],
    "features": [
        {"name": "user", "type": "categorical", "min_count": 2},
        {"name": "item", "type": "categorical", "hash_buckets": 100},
        {"name": "price", "type": "numeric", "normalizer": "log1p", "fill_value": 0},
        {"name": "hist", "type": "sequence", "max_len": 5, "share_vocab_with": "user"},
    ],
    "group": "user",
}


def test_round_trip_yaml_and_json(tmp_path: Path) -> None:
    schema = Schema.from_dict(BASE)
    assert isinstance(schema.features[0], CategoricalFeature)
    assert isinstance(schema.features[2], NumericFeature)
    assert isinstance(schema.features[3], SequenceFeature)
    for name in ("s.yaml", "s.json"):
        schema.save(tmp_path / name)
        again = Schema.load(tmp_path / name)
        assert again == schema
    assert schema.source_columns() == ["click", "user", "item", "price", "hist"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour=1), "unknown schema key(s) ['colour']"),
        (lambda d: d["features"][0].update(bogus=1), "feature 'user': unknown key(s) ['bogus']"),
        (lambda d: d["features"][0].update(type="float"), "unknown type 'float'"),
        (lambda d: d["features"][2].update(normalizer="zscore"), "unknown normalizer 'zscore'"),
        (lambda d: d["features"][0].update(min_count=0), "'min_count' must be a positive"),
        (lambda d: d["features"][3].update(max_len=-1), "'max_len' must be a positive"),
        (lambda d: d["features"][3].update(share_vocab_with="nope"), "names no feature"),
        (lambda d: d["features"][3].update(share_vocab_with="price"), "numeric 'price'"),
        (lambda d: d["features"].append({"name": "user", "type": "numeric"}), "duplicate"),
        (lambda d: d.update(labels=[]), "at least one task"),
        (lambda d: d.pop("labels"), "schema needs 'tasks'"),
        (lambda d: d["features"].append({"name": "click", "type": "numeric"}), "both as label"),
        (lambda d: d["features"][3].update(padding="middle"), "'padding' must be"),
    ],
)
def test_validation_errors_name_the_key(mutate, message: str) -> None:
    import copy

    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(SchemaError, match=None) as err:
        Schema.from_dict(data)
    assert message in str(err.value)


def test_check_columns_names_missing() -> None:
    schema = Schema.from_dict(BASE)
    with pytest.raises(SchemaError) as err:
        schema.check_columns(["click", "user", "item"], where="train.csv")
    assert "['price', 'hist']" in str(err.value)
    assert "train.csv" in str(err.value)


def test_load_reports_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [y]\nfeatures:\n  - {name: a, type: wat}\n")
    with pytest.raises(SchemaError, match=r"bad\.yaml: feature 'a': unknown type 'wat'"):
        Schema.load(bad)
    with pytest.raises(SchemaError, match="not found"):
        Schema.load(tmp_path / "missing.yaml")
