"""Loaders that keep a CUDA device busy: the split on the device, or pinned and prefetched.

:class:`InMemoryLoader` gathers every column of the whole split on the host once per epoch
and the trainer copies each batch from pageable memory, which blocks the host until the GPU
has finished the previous step. These loaders remove both costs:

* :class:`DeviceLoader`: the split is moved to the device once; each epoch draws its
  permutation there (``torch.randperm`` with a device generator seeded ``seed + epoch``) and
  each batch is gathered there.
* :class:`PinnedLoader`: for a split too large for the device. The split stays on the host
  in pinned memory; each batch is gathered on the host (the same permutation as
  :class:`InMemoryLoader`), copied with ``non_blocking=True`` on a side CUDA stream, one
  batch ahead of the training step.
* :class:`DevicePrefetcher`: the same side-stream copy, one batch ahead, for any loader of
  host batches (e.g. :class:`~adrank.data.batches.ParquetStreamLoader`).

:func:`device_loader` picks one for a split (``TrainConfig.device_data_fraction``). Both
loaders subclass :class:`InMemoryLoader`, so they have its semantics: every row once per
epoch, ``drop_last``, a shuffled epoch drops a final 1-row batch, and with ``world_size > 1``
each rank takes a disjoint slice of the epoch's permutation.

Layout: the 1-D columns of one dtype are stored as one row-major (N, C) matrix (sequence
features and labels, which are 2-D, each on their own), so a batch is one gather per dtype
rather than one per column; each gathered (B, C) block is transposed to (C, B) so every
column of the batch is a contiguous (B,) tensor, as :class:`InMemoryLoader` gives. Measured
on the dev box's CPU (1 thread, 1M rows x 26 int64 columns, batch 8,192), the host work of
one epoch was 0.34 s gathering each batch from a row-major matrix, 1.0 s gathering the whole
permuted split once per epoch and slicing it, 1.7 s gathering each column once per epoch
(:class:`InMemoryLoader`), and 4.0 s gathering along the columns of a (C, N) matrix either
way. So both loaders gather per batch (which also needs no second copy of the split).

On a CPU "device" every CUDA-only step (pinning, streams, events) is skipped and the code
paths still run, so they are tested without a GPU; a :class:`DeviceLoader` on the CPU yields
exactly the batches of an :class:`InMemoryLoader` with the same arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from adrank.data.batches import Batch, InMemoryLoader, ParquetStreamLoader, TensorData

__all__ = [
    "DeviceLoader",
    "DevicePrefetcher",
    "PinnedLoader",
    "batch_nbytes",
    "device_loader",
    "feed_device",
    "fits_on_device",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------- packed layout ----
@dataclass(frozen=True)
class _Slot:
    """Where one tensor of a :class:`Batch` lives among the packed parts: ``part`` is the
    index of its tensor, ``column`` its column in a packed (N, C) matrix (``None``: the part
    is the tensor itself)."""

    section: str  # "features", "labels" or "roles"
    name: str
    part: int
    column: int | None


class _Packed:
    """A batch's tensors as a few row-major parts: one (N, C) matrix per dtype of the 1-D
    columns, then every other tensor (labels, sequences) as it is."""

    def __init__(self, batch: Batch) -> None:
        groups: dict[torch.dtype, list[tuple[str, str, torch.Tensor]]] = {}
        others: list[tuple[str, str, torch.Tensor]] = []
        tensors = [("features", k, v) for k, v in batch.features.items()]
        tensors += [("labels", "", batch.labels)]
        tensors += [("roles", k, v) for k, v in batch.roles.items()]
        for section, name, t in tensors:
            if t.dim() == 1 and section != "labels":
                groups.setdefault(t.dtype, []).append((section, name, t))
            else:
                others.append((section, name, t))
        self.sources: list[list[torch.Tensor]] = []  # the columns of each part
        self.matrix: list[bool] = []  # part i is a packed (N, C) matrix of 1-D columns
        where: dict[tuple[str, str], tuple[int, int | None]] = {}
        for members in groups.values():
            for j, (section, name, _) in enumerate(members):
                where[section, name] = (len(self.sources), j)
            self.sources.append([t for _, _, t in members])
            self.matrix.append(True)
        for section, name, t in others:
            where[section, name] = (len(self.sources), None)
            self.sources.append([t])
            self.matrix.append(False)
        # in the batch's own order, so unpacked dicts keep their key order
        self.slots = [_Slot(s, n, *where[s, n]) for s, n, _ in tensors]

    def build(self, device: torch.device, pin: bool) -> list[torch.Tensor]:
        """The parts on ``device`` (in pinned host memory with ``pin``)."""
        parts = []
        for cols, matrix in zip(self.sources, self.matrix, strict=True):
            if not pin:  # columns first: an accelerator stacks them far faster than the host
                cols = [c.to(device) for c in cols]
                parts.append(torch.stack(cols, dim=1) if matrix else cols[0].clone())
                continue
            part = torch.empty(
                (len(cols[0]), len(cols)) if matrix else cols[0].shape,
                dtype=cols[0].dtype,
                pin_memory=True,
            )
            if matrix:
                torch.stack(cols, dim=1, out=part)
            else:
                part.copy_(cols[0])
            parts.append(part)
        return parts

    def unpack(self, parts: list[torch.Tensor]) -> Batch:
        """A :class:`Batch` of ``parts`` (rows in batch order); columns become contiguous."""
        # one transposed copy and one unbind per packed matrix (not one select per column)
        columns = [
            p.t().contiguous().unbind(0) if matrix else p
            for p, matrix in zip(parts, self.matrix, strict=True)
        ]
        features: dict[str, torch.Tensor] = {}
        roles: dict[str, torch.Tensor] = {}
        labels = torch.empty(0)
        for slot in self.slots:
            part = columns[slot.part]
            t = part if slot.column is None else part[slot.column]
            if slot.section == "features":
                features[slot.name] = t
            elif slot.section == "roles":
                roles[slot.name] = t
            else:
                labels = t
        return Batch(features, labels, roles=roles)


def _take(parts: list[torch.Tensor], idx: torch.Tensor, pin: bool = False) -> list[torch.Tensor]:
    """Rows ``idx`` of every part (into pinned memory with ``pin``)."""
    if not pin:
        return [p.index_select(0, idx) for p in parts]
    out = []
    for p in parts:
        buf = torch.empty((len(idx), *p.shape[1:]), dtype=p.dtype, pin_memory=True)
        out.append(torch.index_select(p, 0, idx, out=buf))
    return out


def batch_nbytes(batch: Batch) -> int:
    """Bytes of all tensors of ``batch``."""
    return sum(t.numel() * t.element_size() for t in batch.tensors())


def fits_on_device(
    data: TensorData, device: torch.device, fraction: float, free_bytes: int | None = None
) -> bool:
    """Whether ``data`` fits within ``fraction`` of the device's free memory.

    ``free_bytes`` overrides the free memory (``torch.cuda.mem_get_info`` on CUDA; a CPU
    "device" is the host, where the split already is, so it always fits unless
    ``fraction`` is 0)."""
    if fraction <= 0:
        return False
    if free_bytes is None:
        if device.type != "cuda":
            return True
        free_bytes, _ = torch.cuda.mem_get_info(device)
    return batch_nbytes(data.data) <= fraction * free_bytes


# --------------------------------------------------------------------- side-stream copy ----
def _copy_ahead(items: Iterable[list[torch.Tensor]], device: torch.device) -> Iterator:
    """Copy each list of host tensors to the CUDA ``device`` on a side stream, one item ahead
    of the consumer; yield the device lists, ready for the current stream.

    The copy of item k+1 is issued before item k is handed out, so it overlaps step k. The
    current stream waits on an event of the item's own copy (not on the side stream as a
    whole), and every device tensor is marked as used by the current stream so the caching
    allocator does not reuse its memory early. Pinned host buffers are safe to drop after
    the copy is issued: torch's caching host allocator holds them until the copy is done.
    """
    stream = torch.cuda.Stream(device)
    pending: tuple[list[torch.Tensor], torch.cuda.Event] | None = None

    def issue(host: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.cuda.Event]:
        with torch.cuda.stream(stream):
            moved = [t.to(device, non_blocking=True) for t in host]
            done = torch.cuda.Event()
            done.record(stream)
        return moved, done

    def finish(item: tuple[list[torch.Tensor], torch.cuda.Event]) -> list[torch.Tensor]:
        moved, done = item
        current = torch.cuda.current_stream(device)
        current.wait_event(done)
        for t in moved:
            t.record_stream(current)
        return moved

    for host in items:
        issued = issue(host)
        if pending is not None:
            yield finish(pending)
        pending = issued
    if pending is not None:
        yield finish(pending)


def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


# ---------------------------------------------------------------------------- loaders ----
class DeviceLoader(InMemoryLoader):
    """:class:`InMemoryLoader` with the split resident on ``device`` (moved once, here).

    Each epoch's permutation is drawn on the device (``torch.randperm`` with a generator on
    ``device`` seeded ``seed + epoch``); batches are gathered there. No host work or
    host-device copy per batch. Arguments as :class:`InMemoryLoader`, plus ``device``.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        device: torch.device | str,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(data, batch_size, shuffle, seed, drop_last, rank, world_size)
        self.device = torch.device(device)
        self._layout = _Packed(data.data)
        self._parts = self._place()

    def _place(self) -> list[torch.Tensor]:
        """The packed split where batches are gathered from: here, on the device."""
        return self._layout.build(self.device, pin=False)

    def _order(self, device: torch.device) -> torch.Tensor | None:
        """This rank's rows of the epoch, in order, on ``device`` (``None``: all, in order)."""
        n_total = len(self.data)
        if not (self.shuffle or self.world_size > 1):
            return None
        if self.shuffle:
            gen = torch.Generator(device=device).manual_seed(self.seed + self.epoch)
            order = torch.randperm(n_total, generator=gen, device=device)
        else:
            order = torch.arange(n_total, device=device)
        if self.world_size > 1:
            per_rank = self._rows_per_rank()
            order = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return order

    def _host_batches(self, order: torch.Tensor | None, pin: bool) -> Iterator[list[torch.Tensor]]:
        stop = self._stop(len(self.data) if order is None else len(order))
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, stop)
            if order is None:
                yield [p[start:end] for p in self._parts]
            else:
                yield _take(self._parts, order[start:end], pin)

    def __iter__(self) -> Iterator[Batch]:
        for parts in self._host_batches(self._order(self.device), pin=False):
            yield self._layout.unpack(parts)


class PinnedLoader(DeviceLoader):
    """:class:`InMemoryLoader` for a split that stays on the host, feeding ``device``.

    The split is held in pinned host memory (when CUDA is available); each epoch uses the
    same permutation as :class:`InMemoryLoader` (a CPU generator seeded ``seed + epoch``),
    each batch is gathered on the host into pinned memory and copied to ``device`` with
    ``non_blocking=True`` on a side stream, one batch ahead of the step. On a CPU device the
    batches are the host gathers themselves.
    """

    def _place(self) -> list[torch.Tensor]:
        self._pin = _is_cuda(self.device)
        return self._layout.build(torch.device("cpu"), pin=self._pin)

    def __iter__(self) -> Iterator[Batch]:
        host = self._host_batches(self._order(torch.device("cpu")), pin=self._pin)
        if not self._pin:
            for parts in host:
                yield self._layout.unpack([p.to(self.device) for p in parts])
            return
        for parts in _copy_ahead(host, self.device):
            yield self._layout.unpack(parts)


class DevicePrefetcher:
    """Wrap a loader of host batches: pin each batch and copy it to ``device`` on a side
    stream, one batch ahead of the step (CUDA); on another device, move each batch.

    ``len``, ``set_epoch``, ``rank`` and ``world_size`` are the wrapped loader's.
    """

    def __init__(self, loader: Iterable[Batch], device: torch.device | str) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.rank = getattr(loader, "rank", 0)
        self.world_size = getattr(loader, "world_size", 1)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        if not _is_cuda(self.device):
            for batch in self.loader:
                yield batch.to(self.device)
            return
        layouts: list[_Packed] = []

        def host_parts() -> Iterator[list[torch.Tensor]]:
            for batch in self.loader:
                layout = _Packed(batch)
                layouts.append(layout)
                yield layout.build(torch.device("cpu"), pin=True)

        for parts in _copy_ahead(host_parts(), self.device):
            yield layouts.pop(0).unpack(parts)


def device_loader(
    loader: InMemoryLoader,
    device: torch.device | str,
    fraction: float,
    free_bytes: int | None = None,
) -> DeviceLoader:
    """``loader``'s batches fed to ``device``: a :class:`DeviceLoader` when its split fits
    within ``fraction`` of the free device memory (:func:`fits_on_device`), else a
    :class:`PinnedLoader`. Batch size, shuffling, seed, epoch, ``drop_last`` and rank
    shard are ``loader``'s."""
    device = torch.device(device)
    fits = fits_on_device(loader.data, device, fraction, free_bytes)
    cls = DeviceLoader if fits else PinnedLoader
    size = batch_nbytes(loader.data.data) / 2**20
    logger.info(
        "%s split (%d rows, %.0f MiB) %s", device, len(loader.data), size,
        "kept on the device" if fits else "in pinned host memory, copied one batch ahead",
    )  # fmt: skip
    out = cls(
        loader.data,
        loader.batch_size,
        device,
        shuffle=loader.shuffle,
        seed=loader.seed,
        drop_last=loader.drop_last,
        rank=loader.rank,
        world_size=loader.world_size,
    )
    out.set_epoch(loader.epoch)
    return out


def feed_device(
    loader: Iterable[Batch], device: torch.device | str, fraction: float
) -> Iterable[Batch]:
    """The loader a trainer on ``device`` iterates instead of ``loader``.

    On CUDA: an :class:`InMemoryLoader` (exactly that class) becomes :func:`device_loader`'s
    choice and a :class:`ParquetStreamLoader` is wrapped in a :class:`DevicePrefetcher`.
    Anything else, and everything on another device, is returned unchanged.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return loader
    if type(loader) is InMemoryLoader:
        return device_loader(loader, device, fraction)
    if isinstance(loader, ParquetStreamLoader):
        return DevicePrefetcher(loader, device)
    return loader
