"""Tensor batches and fast loaders.

The in-memory loader keeps a whole split as column tensors. Each epoch it draws one seeded
permutation, gathers every column once, and then yields contiguous slices (views) of the
gathered columns: no per-row Python and no per-sample ``Dataset.__getitem__``.

The streaming loader reads Parquet row groups on a prefetch thread for data larger than RAM.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from adrank.data.feature_map import FeatureMap

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """One mini-batch.

    Attributes:
        features: field name -> tensor; categorical int64 (B,), numeric float32 (B,),
            sequence int64 (B, L).
        labels: float32 (B, T), one column per label column of the feature map.
        roles: role name -> tensor (B,): ``group``, ``domain``, ``position``, ``weight``,
            ``propensity``, ... as declared in the schema (see ``adrank.data.schema.ROLES``).
            Every batch operation (``to``, taking rows, slicing, concatenating) treats them
            alike, so a new role needs no code here.
    """

    features: dict[str, torch.Tensor]
    labels: torch.Tensor
    roles: dict[str, torch.Tensor] = field(default_factory=dict)

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        labels: torch.Tensor,
        group: torch.Tensor | None = None,
        roles: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.features = features
        self.labels = labels
        self.roles = dict(roles or {})
        if group is not None:
            self.roles["group"] = group

    @property
    def group(self) -> torch.Tensor | None:
        """The group/user ids (B,) for gAUC, if the data declare a group."""
        return self.roles.get("group")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch, in :meth:`map`'s order: features, labels, roles."""
        return [*self.features.values(), self.labels, *self.roles.values()]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """A batch with ``fn`` applied to every tensor (features, labels and roles)."""
        return Batch(
            {k: fn(v) for k, v in self.features.items()},
            fn(self.labels),
            roles={k: fn(v) for k, v in self.roles.items()},
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))


def _column_to_tensor(col: pa.ChunkedArray | pa.Array, kind: str) -> torch.Tensor:
    if kind == "sequence":
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else None
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if width is None:
            width = int(len(flat) // max(len(col), 1))
        return _writable_tensor(flat, np.int64).reshape(-1, width)
    arr = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(False)
    return _writable_tensor(arr, np.float32 if kind == "numeric" else np.int64)


def _writable_tensor(arr: np.ndarray, dtype: type) -> torch.Tensor:
    """Arrow buffers are read-only; torch needs writable memory (copy only when needed)."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not out.flags.writeable:
        out = out.copy()
    return torch.from_numpy(out)


def table_to_batch(table: pa.Table, feature_map: FeatureMap) -> Batch:
    """Convert a processed Arrow table (as written by the FeatureProcessor) to a Batch.

    Label columns absent from ``table`` (serving) are zeros; absent role columns are left
    out of :attr:`Batch.roles`.
    """
    features = {f.name: _column_to_tensor(table.column(f.name), f.kind) for f in feature_map.fields}
    if all(name in table.column_names for name in feature_map.labels):
        labels = torch.stack(
            [_column_to_tensor(table.column(n), "numeric") for n in feature_map.labels], dim=1
        )
    else:
        labels = torch.zeros(table.num_rows, len(feature_map.labels))
    roles = {
        name: _column_to_tensor(table.column(info.column), _ROLE_KIND[info.kind])
        for name, info in feature_map.tensor_roles().items()
        if info.column in table.column_names
    }
    return Batch(features, labels, roles=roles)


#: tensor kind of each role kind (see adrank.data.schema.RoleSpec)
_ROLE_KIND = {
    "float": "numeric",
    "int": "categorical",
    "hash": "categorical",
    "vocab": "categorical",
}


class TensorData:
    """A whole split held in memory as column tensors."""

    def __init__(self, batch: Batch) -> None:
        self.data = batch

    @classmethod
    def from_parquet(cls, path: str | Path, feature_map: FeatureMap) -> TensorData:
        table = pq.read_table(path)
        return cls(table_to_batch(table, feature_map))

    def __len__(self) -> int:
        return len(self.data)

    def shard(self, rank: int, world_size: int) -> TensorData:
        """Rows ``rank, rank + world_size, ...``: a disjoint shard per rank."""
        idx = torch.arange(rank, len(self), world_size)
        return TensorData(_take(self.data, idx))


def _take(batch: Batch, idx: torch.Tensor) -> Batch:
    return batch.map(lambda t: t.index_select(0, idx))


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return batch.map(lambda t: t[start:stop])


class InMemoryLoader:
    """Iterate a :class:`TensorData` in batches.

    Args:
        data: the split.
        batch_size: rows per batch.
        shuffle: draw a new seeded permutation every epoch (``seed + epoch``).
        seed: base seed for shuffling.
        drop_last: drop a final incomplete batch.
        rank, world_size: for distributed training, each rank iterates a disjoint shard of
            every epoch's permutation; all ranks get the same number of batches.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows_per_rank(self) -> int:
        return len(self.data) // self.world_size if self.world_size > 1 else len(self.data)

    def _stop(self, n: int) -> int:
        """Rows to yield: a shuffled (training) epoch drops a final 1-row batch, which
        BatchNorm cannot train on; the row differs every epoch, so none is lost for good."""
        if self.drop_last:
            return n - n % self.batch_size
        if self.shuffle and n > 1 and n % self.batch_size == 1:
            return n - 1
        return n

    def __len__(self) -> int:
        return -(-self._stop(self._rows_per_rank()) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        base = self.data.data
        n_total = len(self.data)
        if self.shuffle or self.world_size > 1:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed + self.epoch)
                perm = torch.randperm(n_total, generator=gen)
            else:
                perm = torch.arange(n_total)
            if self.world_size > 1:
                per_rank = self._rows_per_rank()
                perm = perm[self.rank * per_rank : (self.rank + 1) * per_rank]
            base = _take(base, perm)
        stop = self._stop(len(base))
        for start in range(0, stop, self.batch_size):
            yield _slice(base, start, min(start + self.batch_size, stop))


class ParquetStreamLoader:
    """Stream a processed Parquet file in batches, reading row groups on a prefetch thread.

    Memory is bounded by ``prefetch`` row groups plus one batch. Shuffling is approximate:
    row-group order is permuted per epoch (seeded) and rows are shuffled within each group.
    With ``world_size > 1`` each rank reads a disjoint subset of row groups.
    """

    def __init__(
        self,
        path: str | Path,
        feature_map: FeatureMap,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = 2,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.path = Path(path)
        self.feature_map = feature_map
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.prefetch = max(1, prefetch)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        meta = pq.ParquetFile(self.path).metadata
        self._num_groups = meta.num_row_groups
        self._group_rows = [meta.row_group(i).num_rows for i in range(self._num_groups)]
        if self._num_groups < world_size:
            raise ValueError(
                f"{self.path} has {self._num_groups} row groups, fewer than world_size "
                f"{world_size}; rewrite it with smaller row groups"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_groups(self) -> list[int]:
        order = np.arange(self._num_groups)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        # Equal count per rank so all ranks run the same number of steps.
        per_rank = self._num_groups // self.world_size
        return [int(g) for g in order[self.rank * per_rank : (self.rank + 1) * per_rank]]

    def _drops_last_row(self, rows: int) -> bool:
        """As :class:`InMemoryLoader`, a shuffled (training) epoch drops a final 1-row
        batch, which BatchNorm cannot train on (another row each epoch)."""
        return self.shuffle and rows > 1 and rows % self.batch_size == 1

    def __len__(self) -> int:
        rows = sum(self._group_rows[g] for g in self._my_groups())
        return -(-(rows - self._drops_last_row(rows)) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        groups = self._my_groups()
        total = sum(self._group_rows[g] for g in groups)
        q: queue.Queue[Batch | BaseException | None] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)

        def produce() -> None:
            try:
                pf = pq.ParquetFile(self.path)
                for g in groups:
                    if stop.is_set():
                        return
                    batch = table_to_batch(pf.read_row_group(g), self.feature_map)
                    if self.shuffle:
                        batch = _take(batch, torch.randperm(len(batch), generator=gen))
                    q.put(batch)
                q.put(None)
            except BaseException as exc:  # surfaced in the consumer thread
                q.put(exc)

        thread = threading.Thread(target=produce, name="adrank-prefetch", daemon=True)
        thread.start()
        carry: Batch | None = None
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                chunk = item if carry is None else _concat([carry, item])
                n = len(chunk)
                full = n - n % self.batch_size
                for start in range(0, full, self.batch_size):
                    yield _slice(chunk, start, start + self.batch_size)
                carry = _slice(chunk, full, n) if full < n else None
            last = 0 if carry is None else len(carry)
            if last > 1 or (last == 1 and not self._drops_last_row(total)):
                yield carry
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def _concat(batches: list[Batch]) -> Batch:
    first = batches[0]
    return Batch(
        {k: torch.cat([b.features[k] for b in batches]) for k in first.features},
        torch.cat([b.labels for b in batches]),
        roles={k: torch.cat([b.roles[k] for b in batches]) for k in first.roles},
    )
