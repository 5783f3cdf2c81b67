from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from adrank.data.batches import InMemoryLoader, ParquetStreamLoader, TensorData
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema

N = 1000


@pytest.fixture
def prepared(tmp_path: Path):
    schema = Schema.from_dict(
        {
            "labels": ["y"],
            "group": "u",
            "features": [
                {"name": "u", "type": "categorical"},
                {"name": "x", "type": "numeric"},
                {"name": "h", "type": "sequence", "max_len": 4, "share_vocab_with": "u"},
            ],
        }
    )
    frame = pl.DataFrame(
        {
            "y": [i % 2 for i in range(N)],
            "u": [str(i) for i in range(N)],
            "x": [float(i) for i in range(N)],
            "h": [f"{i}|{i - 1}" for i in range(N)],
        }
    )
    proc = FeatureProcessor(schema).fit(frame)
    path = tmp_path / "train.parquet"
    pq.write_table(proc.transform(frame).to_arrow(), path, row_group_size=128)
    return path, proc.feature_map()


def test_tensor_data_dtypes_and_shapes(prepared) -> None:
    path, fm = prepared
    data = TensorData.from_parquet(path, fm)
    b = data.data
    assert len(data) == N
    assert b.features["u"].dtype == torch.int64 and b.features["u"].shape == (N,)
    assert b.features["x"].dtype == torch.float32
    assert b.features["h"].shape == (N, 4)
    assert b.labels.shape == (N, 1)
    assert b.group is not None and b.group.shape == (N,)


def test_in_memory_loader_covers_every_row_once(prepared) -> None:
    path, fm = prepared
    loader = InMemoryLoader(TensorData.from_parquet(path, fm), batch_size=96, shuffle=True, seed=3)
    assert len(loader) == -(-N // 96)
    seen = torch.cat([b.features["x"] for b in loader])
    assert sorted(seen.tolist()) == [float(i) for i in range(N)]
    # rows stay aligned across columns after shuffling
    for b in loader:
        assert torch.equal(b.labels[:, 0], b.features["x"].long().remainder(2).float())
    # seeded: same epoch -> same order, next epoch -> different order
    first = next(iter(loader)).features["x"]
    assert torch.equal(first, next(iter(loader)).features["x"])
    loader.set_epoch(1)
    assert not torch.equal(first, next(iter(loader)).features["x"])


def test_in_memory_loader_shards_are_disjoint(prepared) -> None:
    path, fm = prepared
    data = TensorData.from_parquet(path, fm)
    shards = [
        torch.cat(
            [b.features["x"] for b in InMemoryLoader(data, 64, True, 5, rank=r, world_size=3)]
        )
        for r in range(3)
    ]
    sets = [set(s.tolist()) for s in shards]
    assert all(len(s) == N // 3 for s in sets)
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])


def test_drop_last(prepared) -> None:
    path, fm = prepared
    loader = InMemoryLoader(TensorData.from_parquet(path, fm), 300, drop_last=True)
    assert [len(b) for b in loader] == [300, 300, 300]


def test_stream_loader_reads_all_rows_in_order_and_shuffled(prepared) -> None:
    path, fm = prepared
    ordered = ParquetStreamLoader(path, fm, batch_size=100)
    batches = list(ordered)
    assert all(len(b) == 100 for b in batches)
    assert torch.cat([b.features["x"] for b in batches]).tolist() == [float(i) for i in range(N)]
    shuffled = ParquetStreamLoader(path, fm, batch_size=77, shuffle=True, seed=1)
    xs = torch.cat([b.features["x"] for b in shuffled]).tolist()
    assert sorted(xs) == [float(i) for i in range(N)] and xs != sorted(xs)
    ranks = [ParquetStreamLoader(path, fm, 50, rank=r, world_size=2) for r in range(2)]
    parts = [set(torch.cat([b.features["x"] for b in ld]).tolist()) for ld in ranks]
    assert not parts[0] & parts[1]


def test_stream_loader_surfaces_reader_errors(tmp_path: Path, prepared) -> None:
    _, fm = prepared
    path = tmp_path / "bad.parquet"
    pq.write_table(pl.DataFrame({"y": [1.0]}).to_arrow(), path)
    with pytest.raises(KeyError):
        list(ParquetStreamLoader(path, fm, batch_size=10))


def test_training_epoch_never_ends_with_a_one_row_batch(prepared) -> None:
    path, fm = prepared
    data = TensorData.from_parquet(path, fm)
    shuffled = InMemoryLoader(data, 333, shuffle=True)  # 1000 = 3 * 333 + 1
    assert [len(b) for b in shuffled] == [333, 333, 333]
    assert len(shuffled) == 3
    ordered = InMemoryLoader(data, 333)  # evaluation keeps every row
    assert [len(b) for b in ordered] == [333, 333, 333, 1]


def test_streamed_training_epoch_never_ends_with_a_one_row_batch(prepared) -> None:
    """The same rule in the Parquet streaming loader (its last batch of 1 row crashed
    BatchNorm models); evaluation streams keep every row."""
    path, fm = prepared
    shuffled = ParquetStreamLoader(path, fm, 333, shuffle=True, seed=3)
    assert [len(b) for b in shuffled] == [333, 333, 333] and len(shuffled) == 3
    ordered = ParquetStreamLoader(path, fm, 333)
    assert [len(b) for b in ordered] == [333, 333, 333, 1] and len(ordered) == 4
    whole = ParquetStreamLoader(path, fm, 500, shuffle=True)  # no 1-row tail: nothing dropped
    assert sum(len(b) for b in whole) == N
