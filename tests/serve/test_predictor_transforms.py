"""The Predictor on a schema with declared transforms: raw transform inputs are its fields,
derived columns are computed (never demanded, refused in records), and every path (frame,
record fast path, processor records path) gives the trainer's scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.data.schema import Schema
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor, RecordError

SCHEMA = Schema.from_dict(
    {
        "tasks": [{"name": "click", "label": "click"}],
        "roles": {"passthrough": ["request_id"]},
        "transforms": [
            {"name": "hour_of_day", "fn": "substring", "input": "hour", "start": 6, "length": 2},
            {"name": "weekday", "fn": "datetime_part", "input": "hour", "format": "%y%m%d%H"},
            {"name": "I1", "fn": "log_square_bucket", "input": "I1"},
            {"name": "site_x_ad", "fn": "cross", "input": ["site", "ad"]},
        ],
        "features": [
            {"name": "ad", "type": "categorical"},
            {"name": "hour_of_day", "type": "categorical"},
            {"name": "weekday", "type": "categorical"},
            {"name": "I1", "type": "categorical"},
            {"name": "site_x_ad", "type": "categorical"},
            {"name": "price", "type": "numeric", "normalizer": "standard"},
        ],
    }
)


def _frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ad = rng.integers(0, 6, n)
    hour = rng.integers(0, 24, n)
    return pl.DataFrame(
        {
            "click": ((ad % 3 == 0) ^ (rng.random(n) < 0.2)).astype(np.int64),
            "request_id": [f"r{i}" for i in range(n)],
            "ad": [f"a{x}" for x in ad],
            "hour": [f"1410{20 + d:02d}{h:02d}" for d, h in zip(ad, hour, strict=True)],
            "I1": [None if x % 7 == 0 else str(x) for x in rng.integers(0, 2000, n)],
            "site": [f"s{x}" for x in rng.integers(0, 3, n)],
            "price": rng.gamma(2.0, 1.0, n),
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transforms")
    splits = {"train": _frame(800, 1), "valid": _frame(200, 2), "test": _frame(200, 3)}
    prepared = prepare_frames(SCHEMA, splits, root / "prepared")
    config = RunConfig(
        model="deepfm",
        params={"embedding_dim": 4, "hidden_units": [8]},
        train=TrainConfig(max_epochs=1, batch_size=128, progress=False, num_threads=1, seed=1),
    )
    train_run(config, root / "run", prepared=prepared)
    return root / "run"


def test_fields_are_the_raw_transform_inputs(run: Path) -> None:
    p = Predictor.load(run)
    assert p.field_kinds == {
        "ad": "categorical", "price": "numeric", "hour": "categorical", "I1": "numeric",
        "site": "categorical",
    }  # fmt: skip
    assert set(p.required_fields) == {"ad", "hour", "I1", "site"}


def test_every_path_reproduces_the_trainer(run: Path) -> None:
    expected = np.load(run / "test_predictions.npy")
    raw = _frame(200, 3).with_columns(pl.col("price").cast(pl.String))  # as a CSV reads
    p = Predictor.load(run)
    np.testing.assert_allclose(p.predict(raw), expected, atol=1e-6)
    records = raw.drop("click").to_dicts()
    np.testing.assert_allclose(p.predict(records[:50]), expected[:50], atol=1e-6)  # fast path
    encoded = p.processor.transform_records(records[:50])
    np.testing.assert_allclose(p.predict_encoded(encoded), expected[:50], atol=1e-6)


def test_derived_columns_are_refused_in_records_and_bad_inputs_named(run: Path) -> None:
    p = Predictor.load(run)
    record = {"ad": "a1", "hour": "14102113", "I1": 5, "site": "s1", "price": 1.0}
    assert p.predict([record]).shape == (1,)
    with pytest.raises(RecordError, match=r"hour_of_day.*computed by the schema's transforms"):
        p.predict([{**record, "hour_of_day": "13"}])
    with pytest.raises(RecordError, match="required field 'hour'") as info:
        p.predict([{k: v for k, v in record.items() if k != "hour"}])
    assert info.value.field == "hour"
    # a numeric transform input left out: said so ("categorical fields have no default"
    # read wrong for Criteo's I1); null is a missing value
    with pytest.raises(RecordError, match=r"'I1' is missing \(an input of the schema's transf"):
        p.predict([{k: v for k, v in record.items() if k != "I1"}])
    assert p.predict([{**record, "I1": None}]).shape == (1,)
    with pytest.raises(RecordError, match=r"cannot use value '14133199'.*'hour'") as info:
        p.predict([record, {**record, "hour": "14133199"}])
    assert (info.value.field, info.value.index) == ("hour", 1)
    with pytest.raises(RecordError, match=r"'I1' \(numeric\): expected a number"):
        p.predict([{**record, "I1": "many"}])
    # a frame may carry the derived columns (e.g. an old export): they are recomputed
    frame = pl.DataFrame([{**record, "hour_of_day": "99", "weekday": "9"}])
    np.testing.assert_allclose(p.predict(frame), p.predict([record]), atol=1e-9)
