"""The columnar encode of a ranking request (``adrank.serve.columnar``) gives exactly the
record path's tensors for every kind of field: vocabulary and hashed categorical fields and
numeric ones, each set in the context (encoded once, broadcast) or by the candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.data.schema import Schema
from adrank.pipeline import train_run
from adrank.serve.columnar import PairRecords, encode_pairs
from adrank.serve.predictor import Predictor

SCHEMA = Schema.from_dict(
    {
        "tasks": ["click"],
        "features": [
            {"name": "user", "type": "categorical", "hash_buckets": 64},
            {"name": "item", "type": "categorical"},
            {"name": "site", "type": "categorical", "hash_buckets": 16},
            {"name": "price", "type": "numeric", "normalizer": "log1p"},
            {"name": "age", "type": "numeric", "normalizer": "standard"},
        ],
    }
)


def _frame(rows: int, seed: int) -> pl.DataFrame:
    """Synthetic clicks (made up for this test)."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "click": rng.integers(0, 2, rows),
            "user": [f"u{x}" for x in rng.integers(0, 50, rows)],
            "item": [f"i{x}" for x in rng.integers(0, 20, rows)],
            "site": [f"s{x}" for x in rng.integers(0, 5, rows)],
            "price": rng.random(rows) * 100,
            "age": rng.integers(18, 70, rows).astype(float),
        }
    )


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    root = tmp_path_factory.mktemp("columnar")
    splits = {name: _frame(n, seed) for name, n, seed in
              (("train", 600, 1), ("valid", 100, 2), ("test", 100, 3))}  # fmt: skip
    prepared = prepare_frames(SCHEMA, splits, root / "prepared")
    config = RunConfig(
        model="dnn",
        params={"embedding_dim": 4, "hidden_units": [8]},
        train=TrainConfig(max_epochs=1, batch_size=128, progress=False, seed=0, num_threads=1),
    )
    train_run(config, root / "dnn", prepared=prepared)
    return Predictor.load(root / "dnn")


CASES: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    # every field in the context but the item
    ({"user": "u1", "site": "s2", "price": 12.5, "age": 30},
     [{"item": "i1"}, {"item": "i2"}, {"item": "unseen"}]),
    # hashed and numeric fields set per candidate, one falling back to the context
    ({"user": "u1", "site": "s2", "price": 3, "age": 41.0},
     [{"item": "i1", "site": "s3", "price": 7.25}, {"item": "i4", "user": "u9"}, {"item": "i2"}]),
    # ints for categorical ids, an unseen hashed value
    ({"user": 17, "site": "never", "price": 0.0, "age": 18},
     [{"item": "i3", "age": 65}, {"item": "i3", "age": 22.5}]),
]  # fmt: skip


@pytest.mark.parametrize(("context", "rows"), CASES)
def test_columnar_encode_equals_the_record_path(
    predictor: Predictor, context: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    pairs = PairRecords(context, rows)
    fast = encode_pairs(predictor, pairs)
    assert fast is not None
    slow = predictor.encode_records(predictor.check_records(list(pairs)))
    assert fast.keys() == slow.keys()
    for name in slow:
        assert fast[name].dtype == slow[name].dtype, name
        assert torch.equal(fast[name], slow[name]), name
    np.testing.assert_array_equal(
        predictor.predict_outputs(pairs)["pctr"], predictor.predict_outputs(list(pairs))["pctr"]
    )


def test_values_needing_conversion_take_the_record_path(predictor: Predictor) -> None:
    rows = [{"item": "i1"}]
    for context in (
        {"user": "u1", "site": "s1", "price": "12.5", "age": 30},  # a numeric string
        {"user": True, "site": "s1", "price": 1.0, "age": 30},
    ):  # a boolean id
        assert encode_pairs(predictor, PairRecords(context, rows)) is None  # fmt: skip
