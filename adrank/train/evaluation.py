"""Prediction and evaluation.

Metrics are computed in one place, :func:`compute_metrics`, from *all* predictions of a
split. A distributed run gives each rank a disjoint shard of the split
(:func:`as_eval_loader` with ``rank``/``world_size``) and gathers the predictions of every
rank (:func:`gather_predictions`) before calling it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.metrics import evaluate_all
from adrank.train.distributed import all_gather_arrays

__all__ = [
    "Predictions",
    "as_eval_loader",
    "collect_predictions",
    "compute_metrics",
    "evaluate",
    "gather_predictions",
    "predict",
]


@dataclass
class Predictions:
    """All predictions of a split: probs (N,) or (N, T), labels (N, T), groups (N,) or None."""

    probs: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None


def as_eval_loader(
    data: InMemoryLoader | TensorData | Iterable[Batch],
    eval_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterable[Batch]:
    """An in-order loader with ``eval_batch_size`` rows per batch.

    A :class:`TensorData` or :class:`InMemoryLoader` is re-batched (keeping its rank shard);
    any other iterable of batches (e.g. a Parquet stream) is used as is.

    With ``world_size > 1`` the result is this rank's shard for distributed evaluation, and
    the shards of all ranks together hold every row exactly once: rows ``rank, rank + W,
    ...`` of a :class:`TensorData` (or of an :class:`InMemoryLoader`'s whole split), or
    every ``W``-th batch of any other iterable. Gather with :func:`gather_predictions`.
    """
    if world_size > 1:
        if isinstance(data, InMemoryLoader):
            data = data.data
        if isinstance(data, TensorData):
            return InMemoryLoader(data.shard(rank, world_size), eval_batch_size, shuffle=False)
        return _EveryNthBatch(data, rank, world_size)
    if isinstance(data, TensorData):
        return InMemoryLoader(data, eval_batch_size, shuffle=False)
    if isinstance(data, InMemoryLoader):
        if data.batch_size == eval_batch_size and not data.shuffle:
            return data
        return InMemoryLoader(
            data.data,
            eval_batch_size,
            shuffle=False,
            rank=data.rank,
            world_size=data.world_size,
        )
    return data


class _EveryNthBatch:
    """Batches ``rank, rank + world_size, ...`` of ``loader``: a disjoint evaluation shard of
    a stream (every rank reads the whole stream but runs the model on its batches only)."""

    def __init__(self, loader: Iterable[Batch], rank: int, world_size: int) -> None:
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def __iter__(self) -> Iterator[Batch]:
        for i, batch in enumerate(self.loader):
            if i % self.world_size == self.rank:
                yield batch


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def collect_predictions(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: str | torch.device = "cpu",
    amp: bool = False,
    *,
    allow_empty: bool = False,
) -> Predictions:
    """Run ``model`` in eval mode over ``loader``; the model's train/eval mode is restored.

    Outputs stay on the device until the end, so there is one device-to-host copy. An empty
    loader is an error unless ``allow_empty`` (a rank's evaluation shard may be empty); then
    the arrays have no rows and no known trailing shape (see :func:`gather_predictions`).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    probs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    groups: list[torch.Tensor] = []
    try:
        with torch.inference_mode(), _autocast(device, amp):
            for batch in loader:
                if device.type != "cpu":
                    batch = batch.to(device, non_blocking=True)
                probs.append(torch.sigmoid(model(batch.features).float()))
                labels.append(batch.labels)
                if batch.group is not None:
                    groups.append(batch.group)
    finally:
        model.train(was_training)
    if not probs:
        if allow_empty:
            return Predictions(np.zeros(0, np.float32), np.zeros((0, 0), np.float32), None)
        raise ValueError("cannot predict: the loader yielded no batches")
    group_array = torch.cat(groups).cpu().numpy() if len(groups) == len(probs) else None
    return Predictions(
        probs=torch.cat(probs).cpu().numpy(),
        labels=torch.cat(labels).cpu().numpy(),
        groups=group_array,
    )


def predict(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Click probabilities: (N,) for a single-task model, (N, T) for a multi-task one."""
    return collect_predictions(model, loader, device, amp).probs


def gather_predictions(predictions: Predictions) -> Predictions:
    """The predictions of every rank, concatenated in rank order, on every rank.

    Ranks may hold different numbers of rows (also none); without a process group this
    returns ``predictions`` unchanged.
    """

    def rows(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None or len(array) == 0 else array

    probs = all_gather_arrays(rows(predictions.probs))
    labels = all_gather_arrays(rows(predictions.labels))
    groups = all_gather_arrays(rows(predictions.groups))
    if probs is None or labels is None:
        raise ValueError("cannot gather predictions: no rank has any rows")
    if groups is not None and len(groups) != len(probs):
        raise ValueError("some ranks have group ids and others do not")
    return Predictions(probs=probs, labels=labels, groups=groups)


def compute_metrics(
    predictions: Predictions,
    label_names: tuple[str, ...] | list[str] | None = None,
) -> dict[str, float]:
    """:func:`adrank.metrics.evaluate_all` on all predictions of a split.

    Single task: ``auc``, ``logloss``, ``calibration_ratio``, ``ece`` (+ ``gauc`` with
    groups). Multi-task: the same keys prefixed by the label name (``click_auc``), plus the
    unprefixed mean over tasks (``auc`` is what early stopping monitors).
    """
    probs, labels, groups = predictions.probs, predictions.labels, predictions.groups
    if probs.ndim == 1:
        return evaluate_all(labels[:, 0] if labels.ndim == 2 else labels, probs, groups)
    num_tasks = probs.shape[1]
    names = list(label_names) if label_names else [f"task{t}" for t in range(num_tasks)]
    if len(names) != num_tasks:
        raise ValueError(f"{num_tasks} prediction columns but {len(names)} label names {names}")
    out: dict[str, float] = {}
    per_task = [evaluate_all(labels[:, t], probs[:, t], groups) for t in range(num_tasks)]
    for name, metrics in zip(names, per_task, strict=True):
        out.update({f"{name}_{k}": v for k, v in metrics.items()})
    for key in per_task[0]:
        out[key] = float(np.mean([m[key] for m in per_task]))
    return out


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: str | torch.device = "cpu",
    groups: np.ndarray | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``loader``; ``groups`` (N,) overrides the batches' group ids."""
    predictions = collect_predictions(model, loader, device, amp)
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape[0] != predictions.probs.shape[0]:
            raise ValueError(
                f"groups has {groups.shape[0]} values but the loader yielded "
                f"{predictions.probs.shape[0]} rows"
            )
        predictions.groups = groups
    feature_map = getattr(model, "feature_map", None)
    label_names = feature_map.labels if feature_map is not None else None
    return compute_metrics(predictions, label_names)
