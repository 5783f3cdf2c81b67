"""Synthetic Criteo-schema generator: determinism, shape, CTR, skew, schema, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from adrank.config import TrainConfig
from adrank.data.batches import ParquetStreamLoader
from adrank.data.prepare import prepare_frames
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema
from adrank.data.synth import (
    BLOCK_ROWS,
    CATEGORICAL_FIELDS,
    LABEL,
    NUMERIC_FIELDS,
    arrow_schema,
    criteo_cardinalities,
    criteo_synth_schema,
    synth_criteo,
)
from adrank.models.registry import build_model
from adrank.train.trainer import Trainer

ROWS = 50_000


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "criteo.parquet"
    return synth_criteo(path, ROWS, seed=3, chunk_rows=20_000)


@pytest.fixture(scope="module")
def frame(synth_file: Path) -> pl.DataFrame:
    return pl.read_parquet(synth_file)


def test_row_count_columns_and_types(synth_file: Path, frame: pl.DataFrame) -> None:
    assert frame.height == ROWS
    assert frame.columns == [LABEL, *NUMERIC_FIELDS, *CATEGORICAL_FIELDS]
    assert pq.read_schema(synth_file).equals(arrow_schema())
    assert set(frame[LABEL].unique().to_list()) == {0, 1}
    numeric = frame.select(NUMERIC_FIELDS)
    assert all(numeric[c].drop_nulls().min() >= 0 for c in NUMERIC_FIELDS)
    assert numeric["I12"].null_count() / ROWS == pytest.approx(0.76, abs=0.03)
    assert frame["I2"].null_count() == 0
    values = frame["C1"].drop_nulls()
    assert values.str.len_bytes().unique().to_list() == [8]
    assert values.str.contains("^[0-9a-f]{8}$").all()
    assert frame["C22"].null_count() / ROWS == pytest.approx(0.76, abs=0.03)


def test_ctr_is_near_target(frame: pl.DataFrame) -> None:
    assert frame[LABEL].mean() == pytest.approx(0.25, abs=0.015)


def test_other_ctr_target(tmp_path: Path) -> None:
    path = synth_criteo(tmp_path / "low.parquet", 30_000, seed=1, ctr=0.05)
    assert pl.read_parquet(path)[LABEL].mean() == pytest.approx(0.05, abs=0.01)


def test_values_are_zipf_skewed(frame: pl.DataFrame) -> None:
    cards = criteo_cardinalities()
    for name, k in (("C1", cards[0]), ("C3", cards[2]), ("C7", cards[6])):
        counts = frame[name].drop_nulls().value_counts(sort=True)["count"].to_numpy()
        top_share = counts[0] / counts.sum()
        assert top_share > 50 / k, f"{name}: top value share {top_share} is near uniform"
        assert counts[0] > 10 * np.median(counts)
    # a small field uses (nearly) all of its values
    assert frame["C9"].n_unique() == 3


def test_labels_depend_on_features(frame: pl.DataFrame) -> None:
    """The hidden model makes some signal fields predictive: per-value CTRs differ."""
    by_value = frame.group_by("C6").agg(pl.col(LABEL).mean(), pl.len()).filter(pl.col("len") > 500)
    rates = by_value[LABEL].to_numpy()
    assert rates.max() - rates.min() > 0.05


def test_deterministic_and_independent_of_chunking(tmp_path: Path) -> None:
    rows = BLOCK_ROWS + 1_000
    a = synth_criteo(tmp_path / "a.parquet", rows, seed=7, chunk_rows=BLOCK_ROWS)
    b = synth_criteo(tmp_path / "b.parquet", rows, seed=7, chunk_rows=1_000_000)
    c = synth_criteo(tmp_path / "c.parquet", rows, seed=8, chunk_rows=BLOCK_ROWS)
    ta, tb, tc = (pq.read_table(p) for p in (a, b, c))
    assert ta.num_rows == rows
    assert ta.equals(tb)
    assert not ta.equals(tc)
    assert pq.ParquetFile(a).metadata.num_row_groups == 2
    assert pq.ParquetFile(b).metadata.num_row_groups == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_zero_rows_and_bad_arguments(tmp_path: Path) -> None:
    empty = synth_criteo(tmp_path / "empty.parquet", 0)
    assert pq.read_table(empty).num_rows == 0
    with pytest.raises(ValueError, match="ctr"):
        synth_criteo(tmp_path / "x.parquet", 10, ctr=1.5)
    with pytest.raises(ValueError, match="26 values"):
        criteo_cardinalities(cardinalities=[10, 20])
    with pytest.raises(ValueError, match="chunk_rows"):
        synth_criteo(tmp_path / "x.parquet", 10, chunk_rows=0)
    assert not (tmp_path / "x.parquet").exists()


def test_cardinality_scaling_and_cap() -> None:
    assert criteo_cardinalities()[2] == 10_000_000  # capped at max_cardinality
    full = criteo_cardinalities(max_cardinality=20_000_000)
    assert full[2] == 10_131_227 and full[8] == 3
    small = criteo_cardinalities(cardinality_scale=0.01, max_cardinality=50_000)
    assert max(small) == 50_000
    assert min(small) >= 2
    assert small[0] == round(full[0] * 0.01)


def test_schema_hashes_only_large_fields(frame: pl.DataFrame) -> None:
    schema = criteo_synth_schema(hash_buckets=100_000)
    hashed = [f.name for f in schema.features if getattr(f, "hash_buckets", None)]
    assert hashed == ["C3", "C4", "C12", "C16", "C21", "C24", "C26"]
    assert Schema.from_dict(schema.to_dict()) == schema
    schema.check_columns(frame.columns)
    plain = criteo_synth_schema(None, numeric="buckets", numeric_buckets=8)
    assert not any(getattr(f, "hash_buckets", None) for f in plain.features)
    assert all(f.buckets == 8 for f in plain.features if isinstance(f, NumericFeature))
    assert sum(isinstance(f, CategoricalFeature) for f in plain.features) == 26
    with pytest.raises(ValueError, match="numeric"):
        criteo_synth_schema(None, numeric="zscore")


def test_prepare_and_train_one_epoch_streaming(frame: pl.DataFrame, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    schema = criteo_synth_schema(hash_buckets=2_000)
    splits = {"train": frame.head(40_000), "valid": frame.slice(40_000, 5_000)}
    prepared = prepare_frames(schema, splits, tmp_path / "prepared")
    fm = prepared.feature_map
    assert fm.num_fields == 39
    assert max(f.vocab_size for f in fm.fields) <= 2_002 + 40_000
    assert fm.field("C3").vocab_size == 2_002
    loader = ParquetStreamLoader(prepared.splits["train"], fm, 1024, shuffle=True, prefetch=2)
    model = build_model("deepfm", fm, embedding_dim=4, hidden_units=[16])
    cfg = TrainConfig(batch_size=1024, max_epochs=1, progress=False, num_threads=1)
    valid = ParquetStreamLoader(prepared.splits["valid"], fm, 4096)
    result = Trainer(model, cfg).fit(loader, valid)
    assert result.epochs_run == 1
    assert result.history[0]["train_samples"] == 40_000
    assert np.isfinite(result.history[0]["train_loss"])
    assert 0.0 <= result.best_valid["auc"] <= 1.0
