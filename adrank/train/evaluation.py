"""Prediction and evaluation.

Metrics are computed in one place, :func:`compute_metrics`, from *all* predictions of a
split. A distributed run gives each rank a disjoint shard of the split
(:func:`as_eval_loader` with ``rank``/``world_size``) and gathers the predictions of every
rank (:func:`gather_predictions`) before calling it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import torch

from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap
from adrank.metrics import _sortable, evaluate_all
from adrank.tasks import derive_probabilities, funnel, model_outputs
from adrank.train.distributed import all_gather_arrays, get_world_size, is_distributed

__all__ = [
    "Predictions",
    "as_eval_loader",
    "collect_predictions",
    "compute_metrics",
    "evaluate",
    "gather_predictions",
    "metric_names",
    "predict",
    "slice_metrics",
    "slice_rows",
]

log = logging.getLogger(__name__)

#: the metrics of one task by task type, in the order they are reported; ``gauc`` only when
#: the split has groups (the ``group`` role)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "logloss", "gauc", "calibration_ratio", "ece"),
    "regression": ("mse", "mae"),
}


@dataclass
class Predictions:
    """All predictions of a split: probs (N,) or (N, K) (one column per name in
    ``outputs``), labels (N, T), and the role columns (``roles["group"]`` etc.) as arrays.

    ``outputs`` is ``None`` for predictions made before the outputs were known (they are
    read as the feature map's tasks in order)."""

    probs: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    roles: dict[str, np.ndarray] = dataclass_field(default_factory=dict)
    outputs: list[str] | None = None

    def __post_init__(self) -> None:
        if self.groups is not None:
            self.roles.setdefault("group", self.groups)
        elif "group" in self.roles:
            self.groups = self.roles["group"]

    def by_output(self) -> dict[str, np.ndarray]:
        """Output name -> probabilities (N,), derived outputs included
        (:func:`adrank.tasks.derive_probabilities`)."""
        names = self.outputs or ["pctr"]
        probs = self.probs.reshape(len(self.probs), -1)
        if probs.shape[1] != len(names):
            raise ValueError(f"{probs.shape[1]} prediction columns but outputs {names}")
        return derive_probabilities({n: probs[:, i] for i, n in enumerate(names)})


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
    outputs: list[str] | None = None,
) -> Predictions:
    """Run ``model`` in eval mode over ``loader``; the model's train/eval mode is restored.

    Outputs stay on the device until the end, so there is one device-to-host copy. An empty
    loader is an error unless ``allow_empty`` (a rank's evaluation shard may be empty); then
    the arrays have no rows and no known trailing shape (see :func:`gather_predictions`).
    ``outputs`` names the model's logit columns (default: ``model.outputs``).
    """
    device = torch.device(device)
    names = outputs if outputs is not None else _declared_outputs(model)
    raw = _regression_columns(model, names)
    was_training = model.training
    model.eval()
    probs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    roles: dict[str, list[torch.Tensor]] = {}
    try:
        with torch.inference_mode(), _autocast(device, amp):
            for batch in loader:
                if device.type != "cpu":
                    batch = batch.to(device, non_blocking=True)
                scores = model(batch.features).float()
                if raw is None:
                    probs.append(torch.sigmoid(scores))
                else:  # regression outputs are the raw prediction, not a probability
                    probs.append(torch.where(raw.to(scores.device), scores, torch.sigmoid(scores)))
                labels.append(batch.labels)
                for name, tensor in batch.roles.items():
                    roles.setdefault(name, []).append(tensor)
    finally:
        model.train(was_training)
    if not probs:
        if allow_empty:
            empty = np.zeros(0, np.float32)
            return Predictions(empty, np.zeros((0, 0), np.float32), None, outputs=names)
        raise ValueError("cannot predict: the loader yielded no batches")
    role_arrays = {
        name: torch.cat(parts).cpu().numpy()
        for name, parts in roles.items()
        if len(parts) == len(probs)
    }
    return Predictions(
        probs=torch.cat(probs).cpu().numpy(),
        labels=torch.cat(labels).cpu().numpy(),
        groups=role_arrays.get("group"),
        roles=role_arrays,
        outputs=names,
    )


def _regression_columns(model: torch.nn.Module, names: list[str] | None) -> torch.Tensor | None:
    """Bool mask over the output columns that belong to regression tasks (``None``: none)."""
    feature_map = getattr(model, "feature_map", None)
    if feature_map is None or names is None:
        return None
    regression = {t.output for t in feature_map.tasks if t.type == "regression"}
    if not regression & set(names):
        return None
    mask = torch.tensor([n in regression for n in names])
    return mask if len(names) > 1 else mask[0]


def _declared_outputs(model: torch.nn.Module) -> list[str] | None:
    declared = getattr(model, "outputs", None)
    return list(declared) if declared is not None else None


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
    if probs is None or labels is None:
        raise ValueError("cannot gather predictions: no rank has any rows")
    roles: dict[str, np.ndarray] = {}
    names = set(predictions.roles)
    if is_distributed():  # a rank with an empty shard has no role arrays: use the union
        everyone: list[Any] = [None] * get_world_size()
        torch.distributed.all_gather_object(everyone, sorted(names))
        names = {n for ranks_names in everyone for n in ranks_names}
    for name in sorted(names):
        gathered = all_gather_arrays(rows(predictions.roles.get(name)))
        if gathered is not None:
            if len(gathered) != len(probs):
                raise ValueError(f"some ranks have {name!r} role values and others do not")
            roles[name] = gathered
    return Predictions(
        probs=probs,
        labels=labels,
        groups=roles.get("group"),
        roles=roles,
        outputs=predictions.outputs,
    )


def compute_metrics(
    predictions: Predictions,
    feature_map: FeatureMap | tuple[str, ...] | list[str] | None = None,
    *,
    rows: np.ndarray | None = None,
) -> dict[str, float]:
    """The metrics of all predictions of a split, per task.

    With one task the keys are ``auc``, ``logloss``, ``calibration_ratio`` and ``ece`` (+
    ``gauc`` with groups; ``mse``/``mae`` for a regression task). With several tasks every
    task the model predicts (directly or through a derived output) gets the same keys
    prefixed by its name (``click_auc``); a task with a ``given`` label is scored only on
    rows where that label is 1 (CVR AUC on clicked rows). A click/conversion dataset also
    gets ``pctcvr_*`` on all impressions (label = click x conversion). The unprefixed keys
    are then the mean over the dataset's own tasks (not ``pctcvr`` when it is only derived);
    a task whose metric is NaN (one class on its rows) makes that mean NaN, and a task with
    no rows gets ``{task}_rows`` = 0 instead of its metrics and is left out of the mean.
    ``rows`` (bool (N,)) restricts every metric to a subset of the rows (see
    :func:`slice_metrics`).

    A legacy ``label_names`` tuple in place of the feature map keeps the format-v1
    behaviour (one column per label, in order).
    """
    labels = predictions.labels
    keep = np.ones(len(labels), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    if keep.shape != (len(labels),):
        raise ValueError(f"rows has shape {keep.shape} for {len(labels)} predictions")
    if feature_map is None or not isinstance(feature_map, FeatureMap):
        if rows is not None:
            groups = None if predictions.groups is None else predictions.groups[keep]
            predictions = Predictions(predictions.probs[keep], labels[keep], groups)
        return _legacy_metrics(predictions, feature_map)
    probs = predictions.by_output()
    groups = predictions.groups
    per_task: dict[str, dict[str, float]] = {}
    for task in _scored_tasks(feature_map, probs):
        mask = keep.copy()
        if task.given is not None:
            mask &= labels[:, task.given] == 1
        y = labels[:, task.labels[0]]
        for other in task.labels[1:]:  # pctcvr: click x conversion
            y = y * labels[:, other]
        g = None if groups is None else groups[mask]
        per_task[task.name] = _task_metrics(y[mask], probs[task.output][mask], g, task.kind)
    return _named_metrics(per_task, feature_map)


def metric_names(
    feature_map: FeatureMap, outputs: list[str] | tuple[str, ...], *, groups: bool = True
) -> list[str]:
    """The names of the metrics :func:`compute_metrics` returns for a model with logit
    columns ``outputs`` on ``feature_map``'s tasks (without the ``val_`` prefix of a metrics
    line), in order; ``groups``: whether the split has groups (``gauc``).

    Early stopping's ``train.monitor`` must be one of these (see :class:`Trainer`). Names
    that depend on the data are left out: a task with no rows in a split gets ``rows``
    instead of its metrics."""
    probs = derive_probabilities({name: np.zeros(0) for name in outputs})
    per_task = {
        task.name: dict.fromkeys(task_metric_names(task.kind, groups), 0.0)
        for task in _scored_tasks(feature_map, probs)
    }
    return list(_named_metrics(per_task, feature_map))


def task_metric_names(kind: str, groups: bool) -> list[str]:
    """The metrics of one task of type ``kind`` (``binary``/``regression``), in order."""
    return [m for m in TASK_METRICS[kind] if groups or m != "gauc"]


@dataclass(frozen=True)
class _ScoredTask:
    """A task :func:`compute_metrics` scores: its metric prefix, the probability column, the
    label columns whose product is its target, its ``given`` mask column and its type."""

    name: str
    output: str
    labels: tuple[int, ...]
    given: int | None
    kind: str


def _scored_tasks(feature_map: FeatureMap, probs: dict[str, Any]) -> list[_ScoredTask]:
    """The tasks scored from predictions of the outputs in ``probs`` (derived ones
    included): every task whose output is there, and ``pctcvr`` on all impressions for a
    click/conversion dataset that has no ``pctcvr`` task."""
    scored = [
        _ScoredTask(
            task.name,
            task.output,
            (feature_map.label_index(task.label),),
            feature_map.label_index(task.given) if task.given else None,
            task.type,
        )
        for task in feature_map.tasks
        if task.output in probs
    ]
    pair = funnel(feature_map)
    if pair is not None and "pctcvr" in probs and "pctcvr" not in feature_map.outputs:
        click, conversion = pair
        labels = (feature_map.label_index(click.label), feature_map.label_index(conversion.label))
        scored.append(_ScoredTask("pctcvr", "pctcvr", labels, None, "binary"))
    if not scored:
        raise ValueError(
            f"no task of this dataset ({[t.name for t in feature_map.tasks]}) is predicted by "
            f"outputs {sorted(probs)}"
        )
    return scored


def _named_metrics(
    per_task: dict[str, dict[str, float]], feature_map: FeatureMap
) -> dict[str, float]:
    """The metrics line of a split from each scored task's metrics: a single-task dataset's
    as they are; otherwise prefixed by the task's name, plus the unprefixed mean over the
    dataset's tasks that have rows."""
    if len(per_task) == 1 and len(feature_map.tasks) == 1:
        return next(iter(per_task.values()))
    out: dict[str, float] = {}
    for name, metrics in per_task.items():
        out.update({f"{name}_{k}": v for k, v in metrics.items()})
    task_names = [t.name for t in feature_map.tasks if t.name in per_task]
    # every metric some task has, in order (a task without rows has only ``rows``: whichever
    # task that is, it is left out of the mean)
    keys = dict.fromkeys(k for n in task_names for k in per_task[n] if k != "rows")
    for key in keys:
        values = [per_task[n][key] for n in task_names if key in per_task[n]]
        out[key] = float(np.mean(values))
    return out


def _task_metrics(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray | None, kind: str
) -> dict[str, float]:
    """Metrics of one task on its rows; AUC-type metrics are NaN when a class is absent."""
    if len(y) == 0:
        return {"rows": 0.0}
    if kind == "regression":
        err = p.astype(np.float64) - y.astype(np.float64)
        out = {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
    elif np.all(y == y[0]):
        from adrank.metrics import calibration, logloss

        cal = calibration(y, p)
        out = {"auc": float("nan"), "logloss": logloss(y, p), "gauc": float("nan")}
        out |= {"calibration_ratio": float(cal["ratio"]), "ece": float(cal["ece"])}
    else:
        out = evaluate_all(y, p, None)
        if groups is not None:
            from adrank.metrics import gauc

            try:
                out["gauc"] = gauc(y, p, groups)
            except ValueError:  # no group has both classes (tiny splits): undefined, not fatal
                out["gauc"] = float("nan")
    # the names and order metric_names() promises
    return {name: out[name] for name in task_metric_names(kind, groups is not None)}


def _legacy_metrics(
    predictions: Predictions, label_names: tuple[str, ...] | list[str] | None
) -> dict[str, float]:
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


def role_value_names(feature_map: FeatureMap, role: str) -> dict[int, str] | None:
    """Display names of a ``vocab`` role's ids (``0``, unseen in training, is ``"unknown"``,
    or ``"(unseen)"`` when a value is itself called ``unknown``, as frappe's ``homework``
    context is), or None for a role without fitted values."""
    info = feature_map.roles.get(role)
    if info is None or not info.values:
        return None
    unseen = "(unseen)" if "unknown" in info.values else "unknown"
    return {0: unseen} | {i + 1: v for i, v in enumerate(info.values)}


def slice_metrics(
    predictions: Predictions,
    feature_map: FeatureMap,
    by: str | np.ndarray,
    *,
    values: dict[int, str] | None = None,
    min_rows: int = 1,
) -> dict[str, dict[str, float]]:
    """:func:`compute_metrics` for every value of a slicing column, plus ``"all"``.

    ``by`` is a role name in ``predictions.roles`` (``"domain"``, ``"position"``, ...) or an
    array (N,) of values (a feature's ids, warm/cold flags). ``values`` maps raw slice
    values to display names (a vocab role's values are used by default). Slices with fewer
    than ``min_rows`` rows are left out; otherwise the slices' ``rows`` sum to the
    ``"all"`` entry's, a missing value (NaN, ``None``) being a slice of its own (see
    :func:`slice_rows` for the names). Each slice's dict has ``rows`` (its row count) and,
    for a task with a ``given`` label, ``<task>_rows`` (the rows it is measured on: a
    conversion task's clicked rows). This is the one slicing API for domains, positions and
    features.
    """
    if isinstance(by, str):
        if by not in predictions.roles:
            raise KeyError(f"no role {by!r} in the predictions; roles: {sorted(predictions.roles)}")
        keys = predictions.roles[by]
        if values is None:
            values = role_value_names(feature_map, by)
    else:
        keys = np.asarray(by).reshape(-1)
        if len(keys) != len(predictions.labels):
            raise ValueError(f"'by' has {len(keys)} values for {len(predictions.labels)} rows")
    everything = np.ones(len(keys), dtype=bool)
    out: dict[str, dict[str, float]] = {
        "all": compute_metrics(predictions, feature_map)
        | {"rows": float(len(keys))}
        | _given_rows(predictions, feature_map, everything)
    }
    for name, rows in slice_rows(keys, values):
        if rows.sum() < min_rows:
            continue
        metrics = compute_metrics(predictions, feature_map, rows=rows)
        out[name] = (
            metrics | {"rows": float(rows.sum())} | _given_rows(predictions, feature_map, rows)
        )
    return out


def _given_rows(
    predictions: Predictions, feature_map: FeatureMap, rows: np.ndarray
) -> dict[str, float]:
    """``<task>_rows``: the rows a task with a ``given`` label is measured on (a conversion
    task's clicked rows) among ``rows``, for a multi-task dataset."""
    labels = np.asarray(predictions.labels)
    if labels.ndim != 2 or len(feature_map.tasks) < 2:
        return {}
    out = {}
    for task in feature_map.tasks:
        if task.given:
            given = labels[:, feature_map.label_index(task.given)] == 1
            out[f"{task.name}_rows"] = float((given & rows).sum())
    return out


def slice_rows(
    keys: np.ndarray, values: dict[int, str] | None = None
) -> list[tuple[str, np.ndarray]]:
    """The slices of :func:`slice_metrics`: ``(name, rows)`` per distinct value of ``keys``
    (N,) in sorted order, ``rows`` a bool mask (N,); together they hold every row once.

    A missing value (NaN, ``None``) is one slice (``"nan"``, ``"None"``) after the others.
    ``name`` is ``values[key]`` (else the key as text); a name that is ``"all"`` (the
    overall metrics) or another slice's gets `` (key)`` appended (logged), so no slice
    replaces another."""
    keys = np.asarray(keys).reshape(-1)
    sortable, uniques = _sortable(keys)
    if uniques is None:
        distinct, inverse = np.unique(sortable, return_inverse=True)  # one NaN, last
        uniques = list(distinct)  # numpy scalars: their text is the default name
    else:
        inverse = sortable
    inverse = inverse.reshape(-1)
    taken = {"all"}
    out = []
    for code, key in enumerate(uniques):
        raw = key.item() if isinstance(key, np.generic) else key
        name = str(values.get(raw, str(key)) if values else key)
        if name in taken:
            renamed, i = f"{name} ({raw!r})", 2
            while renamed in taken:
                renamed, i = f"{name} ({raw!r}, {i})", i + 1
            log.warning("slice value %r is shown as %r: %r is taken", raw, renamed, name)
            name = renamed
        taken.add(name)
        out.append((name, inverse == code))
    return out


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: str | torch.device = "cpu",
    groups: np.ndarray | None = None,
    amp: bool = False,
    task: str | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``loader``; ``groups`` (N,) overrides the batches' group ids;
    ``task`` is the task of a single-task model on a multi-task dataset."""
    feature_map = getattr(model, "feature_map", None)
    outputs = None if feature_map is None else model_outputs(model, feature_map, task)
    predictions = collect_predictions(model, loader, device, amp, outputs=outputs)
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.shape[0] != predictions.probs.shape[0]:
            raise ValueError(
                f"groups has {groups.shape[0]} values but the loader yielded "
                f"{predictions.probs.shape[0]} rows"
            )
        predictions.groups = groups
        predictions.roles["group"] = groups
    return compute_metrics(predictions, feature_map)
