"""Predictor field rules, the record fast path, and consistency with the trainer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adrank.data.batches import table_to_batch
from adrank.serve.artifact import ArtifactError
from adrank.serve.predictor import Predictor, RecordError


@pytest.fixture(scope="module")
def predictor(synthetic_runs) -> Predictor:
    return Predictor.load(synthetic_runs.run_a)


def base_record() -> dict[str, Any]:
    return {
        "user": "u3",
        "ad": "7",
        "creative": "7-1",
        "site": "s2",
        "price": 3.5,
        "age": 30,
        "hist": "1|2|7",
    }


def test_required_and_optional_fields(predictor: Predictor) -> None:
    assert predictor.required_fields == ("user", "ad", "creative", "site")
    assert predictor.field_kinds == {
        "user": "categorical",
        "ad": "categorical",
        "creative": "categorical",
        "site": "categorical",
        "price": "numeric",
        "age": "numeric",
        "hist": "sequence",
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"user": None, "usr": "u3"}, "usr", "unknown field"),
        ({"creative": "drop"}, "creative", "required field 'creative' is missing"),
        ({"ad": 7.0}, "ad", "expected a string or integer, got float"),
        ({"site": True}, "site", "boolean"),
        ({"user": {"id": 1}}, "user", "got dict"),
        ({"price": "cheap"}, "price", "expected a number"),
        ({"price": [1]}, "price", "expected a number"),
        ({"hist": {"a": 1}}, "hist", "expected a delimited string or a list"),
        ({"hist": [1.5]}, "hist", "list of strings or integers"),
    ],
)
def test_bad_records_name_the_field(
    predictor: Predictor, change: dict[str, Any], field: str, message: str
) -> None:
    good = base_record()
    bad = {**good, **change}
    bad = {k: v for k, v in bad.items() if v != "drop"}
    with pytest.raises(RecordError, match=message) as info:
        predictor.predict([good, bad])
    assert info.value.field == field and info.value.index == 1
    assert "record 1" in str(info.value)


def test_defaults_and_oov(predictor: Predictor) -> None:
    rec = base_record()
    without = {k: v for k, v in rec.items() if k not in ("price", "age", "hist")}
    explicit = {**without, "price": 1.0, "age": None, "hist": []}
    p = predictor.predict([without, explicit, {**rec, "user": "never-seen"}, {**rec, "user": None}])
    assert p[0] == p[1]  # missing numeric -> fill_value 1.0, missing sequence -> empty
    assert p[2] == p[3]  # unseen category == missing value == OOV
    assert predictor.predict([{**rec, "hist": [1, 2, 7]}])[0] == predictor.predict([rec])[0]
    assert predictor.predict([{**rec, "ad": 7}])[0] == predictor.predict([rec])[0]
    assert predictor.predict([{**rec, "price": "3.5"}])[0] == predictor.predict([rec])[0]


def test_options_optional_fields_and_allow_unknown(synthetic_runs) -> None:
    lenient = Predictor.load(synthetic_runs.run_a, optional_fields=["site"], allow_unknown=True)
    rec = base_record()
    no_site = {k: v for k, v in rec.items() if k != "site"}
    p = lenient.predict([no_site, {**rec, "site": None}, {**rec, "request_id": "r1"}])
    assert p[0] == p[1]
    assert p[2] == lenient.predict([rec])[0]
    with pytest.raises(ValueError, match="not fields of this model"):
        Predictor.load(synthetic_runs.run_a, optional_fields=["nope"])


def test_fast_path_encodes_exactly_like_the_processor(synthetic_runs, predictor) -> None:
    records = synthetic_runs.raw_test.drop("click").head(300).to_dicts()
    rng = np.random.default_rng(0)
    for i, rec in enumerate(records):  # mix in OOV values, nulls, ints, lists, strings
        if i % 7 == 0:
            rec["user"] = f"new-{i}"
        if i % 11 == 0:
            rec["price"] = None
        if i % 13 == 0:
            rec["hist"] = [int(x) for x in rng.integers(0, 40, 9)]
        if i % 5 == 0:
            rec["age"] = str(rec["age"])
        if i % 17 == 0:
            rec["site"] = None
    checked = predictor.check_records(records)
    fast = predictor.encode_records(checked)
    slow = table_to_batch(predictor.encode(records).to_arrow(), predictor.feature_map).features
    assert fast.keys() == slow.keys()
    for name in slow:
        assert fast[name].dtype == slow[name].dtype, name
        assert torch.equal(fast[name], slow[name]), name
    np.testing.assert_array_equal(
        predictor.predict(records), predictor.predict_encoded(predictor.encode(records))
    )


def test_raw_rows_reproduce_trainer_predictions(synthetic_runs, predictor) -> None:
    expected = np.load(synthetic_runs.run_a / "test_predictions.npy")
    frame = synthetic_runs.raw_test.drop("click")
    assert np.max(np.abs(predictor.predict(frame) - expected)) <= 1e-6
    assert np.max(np.abs(predictor.predict(frame.to_arrow()) - expected)) <= 1e-6
    records = frame.to_dicts()
    assert np.max(np.abs(predictor.predict(records[:1000]) - expected[:1000])) <= 1e-6


def test_frames_missing_columns(synthetic_runs, predictor) -> None:
    frame = synthetic_runs.raw_test.drop("click").head(20)
    full = predictor.predict(frame.with_columns(price=1.0, hist=None))
    np.testing.assert_array_equal(predictor.predict(frame.drop("price", "hist")), full)
    with pytest.raises(RecordError, match=r"required column\(s\) \['ad'\]"):
        predictor.predict(frame.drop("ad"))
    with pytest.raises(TypeError, match="cannot score"):
        predictor.predict("user=1")


def test_versions_and_backend_errors(synthetic_runs, predictor) -> None:
    other = Predictor.load(synthetic_runs.run_b)
    assert predictor.version.startswith("deepfm-") and predictor.version != other.version
    assert Predictor.load(synthetic_runs.run_a).version == predictor.version
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor.load(synthetic_runs.run_a, backend="tensorrt")
    with pytest.raises(ArtifactError, match="adrank export"):
        Predictor.load(synthetic_runs.run_b, backend="torchscript")


@pytest.mark.parametrize(
    "damaged",
    ["feature_map.json", "metrics.json", "processor/processor.json"],
)
def test_a_damaged_artifact_file_is_named(synthetic_runs, tmp_path, damaged: str) -> None:
    """A truncated JSON file of a run raised the parser's bare JSONDecodeError (or an
    AttributeError from the processor); a server loading or swapping in the run could not
    tell which file was bad."""
    import shutil

    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    path = run / damaged
    path.write_text(path.read_text()[: len(path.read_text()) // 2])
    named = re.escape(damaged.split("/")[0])  # the processor is named by its folder
    with pytest.raises(ArtifactError, match=rf"{named} is damaged \(JSONDecodeError"):
        Predictor.load(run)
