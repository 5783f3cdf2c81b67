"""Prepare (build + fit + transform + write) every dataset whose files are present."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adrank.data.datasets import available_datasets, get_dataset
from adrank.data.prepare import prepare_dataset

pytestmark = pytest.mark.integration

#: dataset -> (rows per split, {label: (min, max) positive rate over splits})
EXPECTED = {
    "frappe": ({"train": 202_026, "valid": 57_722, "test": 28_861}, {"label": (0.3333, 0.3334)}),
    "criteo": ({"train": 7_200, "valid": 409, "test": 391}, {"label": (0.21, 0.23)}),
    "avazu": ({"train": 8_087, "valid": 480, "test": 432}, {"click": (0.17, 0.19)}),
    "frappe_funnel": (
        {"train": 202_026, "valid": 57_722, "test": 28_861},
        {"click": (0.3333, 0.3334), "engaged": (0.069, 0.071)},
    ),
    "movielens_100k": (
        {"train": 79_926, "valid": 10_037, "test": 10_037},
        {"like": (0.47, 0.58), "love": (0.17, 0.23)},
    ),
    "open_bandit": (None, {"click": (0.001, 0.01)}),
    "ali_ccp": ({"train": 100, "valid": 50, "test": 50}, {"click": (0.03, 0.08)}),
}


@pytest.mark.parametrize("name", available_datasets())
def test_prepare_every_present_dataset(name: str, data_dir: Path, cache_dir: Path) -> None:
    builder = get_dataset(name)
    if builder.missing_files(data_dir):
        pytest.skip(f"{name}: files not present in {data_dir}")
    prepared = prepare_dataset(name, data_dir=data_dir, cache_dir=cache_dir, download=False)
    sizes, rates = EXPECTED.get(name, (None, {}))
    rows = {k: v.rows for k, v in prepared.stats.items()}
    if sizes is not None:
        assert rows == sizes
    if name == "movielens_100k":
        assert sum(rows.values()) == 100_000
    if name == "open_bandit":
        assert sum(rows.values()) == 40_000
    for split, path in prepared.splits.items():
        assert pq.ParquetFile(path).metadata.num_rows == rows[split]
        for label, (lo, hi) in rates.items():
            assert lo <= prepared.stats[split].positive_rate[label] <= hi, (split, label)
    # every field of the feature map is a column of the processed data
    columns = set(pq.ParquetFile(prepared.splits["train"]).schema_arrow.names)
    assert set(prepared.feature_map.names) <= columns
