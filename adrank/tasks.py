"""Tasks and outputs: which model output is trained and scored against which label.

A dataset declares tasks (:class:`~adrank.data.feature_map.TaskInfo`); each task has an
output name: ``pctr``, ``pcvr`` (a conversion given a click), ``pctcvr`` (a click and a
conversion, per impression) or, outside the click/conversion funnel, the task's own name.

A model declares the outputs it emits (``model.outputs``, one logit column each) and the
outputs it is trained through (``model.trained_outputs``, by default the same). ESMM emits
``pctr`` and ``pcvr`` and is trained through ``pctr`` and ``pctcvr``; the loss derives
``pctcvr = pctr * pcvr`` in log space. A single-task model (``outputs is None``) emits one
logit for the task it is told (``train.task`` / ``--set task=NAME``).

Derivations, the same for training, metrics and serving (:func:`derive_probabilities`):

* ``pctcvr = pctr * pcvr``;
* ``pcvr = pctcvr / pctr``, clipped to [0, 1] (never multiply a ``pctcvr`` by ``pctr``).

This module is shared by the trainer, the metrics and the Predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from adrank.data.feature_map import FeatureMap, TaskInfo

__all__ = [
    "Objective",
    "TaskError",
    "derive_probabilities",
    "model_outputs",
    "objective_loss",
    "resolve_objectives",
    "resolve_task",
]


class TaskError(ValueError):
    """A model, a task choice and a dataset's tasks do not fit together."""


@dataclass(frozen=True)
class Objective:
    """One trained output.

    Attributes:
        output: the output name (``pctr``, ``pctcvr``, a task name ...).
        label: the label column index in the batch (or ``None`` for the derived pctcvr label,
            the product of ``label_product`` columns).
        label_product: for the derived ``pctcvr``: the click and conversion label columns.
        mask: a label column index that must be 1 for a row to count (a task's ``given``).
        weight: the objective's weight in the loss.
        type: ``binary`` or ``regression``.
        task: the task's name (metric prefix).
    """

    output: str
    label: int | None
    weight: float
    type: str
    task: str
    mask: int | None = None
    label_product: tuple[int, int] | None = None

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        if self.label_product is not None:
            a, b = self.label_product
            return labels[:, a] * labels[:, b]
        return labels[:, self.label]  # type: ignore[index]


def funnel(feature_map: FeatureMap) -> tuple[TaskInfo, TaskInfo] | None:
    """The (click, conversion) tasks when the dataset has both ``pctr`` and ``pcvr``."""
    outputs = feature_map.outputs
    if "pctr" in outputs and "pcvr" in outputs:
        return outputs["pctr"], outputs["pcvr"]
    return None


def task_objective(feature_map: FeatureMap, task: TaskInfo) -> Objective:
    mask = feature_map.label_index(task.given) if task.given else None
    return Objective(
        output=task.output,
        label=feature_map.label_index(task.label),
        weight=task.weight,
        type=task.type,
        task=task.name,
        mask=mask,
    )


def output_objective(feature_map: FeatureMap, output: str) -> Objective:
    """The objective that scores ``output`` on ``feature_map``'s labels."""
    tasks = feature_map.outputs
    if output in tasks:
        return task_objective(feature_map, tasks[output])
    pair = funnel(feature_map)
    if output == "pctcvr" and pair is not None:
        click, conversion = pair
        return Objective(
            output="pctcvr",
            label=None,
            weight=conversion.weight,
            type="binary",
            task="pctcvr",
            label_product=(
                feature_map.label_index(click.label),
                feature_map.label_index(conversion.label),
            ),
        )
    have = sorted(tasks) + (["pctcvr"] if pair is not None else [])
    need = "a task with `given: <click label>`" if output in ("pcvr", "pctcvr") else ""
    raise TaskError(
        f"output {output!r} has no label in this dataset (its outputs: {have}"
        + (f"; {output} needs {need}" if need else "")
        + ")"
    )


def resolve_task(feature_map: FeatureMap, task: str | None, model_name: str = "model") -> TaskInfo:
    """The task a single-task model trains on: ``task`` if given, else the only task."""
    names = [t.name for t in feature_map.tasks]
    if task is not None:
        for t in feature_map.tasks:
            if t.name == task:
                return t
        raise TaskError(
            f"unknown task {task!r} in --set task={task}; this dataset's tasks: {names}"
        )
    if len(feature_map.tasks) == 1:
        return feature_map.tasks[0]
    raise TaskError(
        f"this dataset has tasks {names}; the single-task model {model_name!r} must be told "
        f"which one to learn: --set task={names[0]} (or train.task=NAME)"
    )


def model_name(model: torch.nn.Module) -> str:
    """The name errors call ``model`` by: its class in lower case (``deepfm``); a wrapper
    that keeps the model it wraps as ``inner`` (``PositionFeatureModel``) is named after it."""
    inner = getattr(model, "inner", None)
    if isinstance(inner, torch.nn.Module):
        return model_name(inner)
    return type(model).__name__.lower()


def model_outputs(model: torch.nn.Module, feature_map: FeatureMap, task: str | None) -> list[str]:
    """The names of the model's logit columns."""
    declared = getattr(model, "outputs", None)
    if declared is None:
        return [resolve_task(feature_map, task, model_name(model)).output]
    return list(declared)


def resolve_objectives(
    model: torch.nn.Module, feature_map: FeatureMap, task: str | None = None
) -> list[Objective]:
    """The objectives the model is trained through, each checked against the dataset."""
    declared = getattr(model, "outputs", None)
    if declared is None:
        chosen = resolve_task(feature_map, task, model_name(model))
        return [task_objective(feature_map, chosen)]
    if task is not None:
        raise TaskError(
            f"{model_name(model)!r} is a multi-task model (outputs {list(declared)}); "
            f"--set task={task} is for single-task models"
        )
    trained = getattr(model, "trained_outputs", None) or declared
    return [output_objective(feature_map, o) for o in trained]


def _log_probs(
    logits: torch.Tensor, outputs: list[str], name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log(1 - p))`` of output ``name``: a logit column, or ``pctcvr`` from
    ``pctr`` and ``pcvr``."""
    if name in outputs:
        z = logits[:, outputs.index(name)]
        return F.logsigmoid(z), F.logsigmoid(-z)
    if name == "pctcvr" and "pctr" in outputs and "pcvr" in outputs:
        log_p = F.logsigmoid(logits[:, outputs.index("pctr")]) + F.logsigmoid(
            logits[:, outputs.index("pcvr")]
        )
        # log(1 - p) = log(-expm1(log p)), accurate for p near 0 and near 1
        return log_p, torch.log(-torch.expm1(log_p.clamp(max=-1e-7)))
    raise TaskError(f"outputs {outputs} cannot give {name!r}")


def objective_loss(
    logits: torch.Tensor,
    outputs: list[str],
    objective: Objective,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean loss of one objective over the rows it is defined on (a scalar).

    Binary: BCE; regression: squared error. ``weight`` (B,) are per-row sample weights.
    Rows masked out by the task's ``given`` label don't count; with no such row the loss is
    0 (and still has a gradient path).
    """
    target = objective.target(labels).float()
    if objective.type == "regression":
        pred = logits[:, outputs.index(objective.output)].float()
        per_row = (pred - target) ** 2
    elif objective.output in outputs and weight is None and objective.mask is None:
        # the plain single-label path: exactly F.binary_cross_entropy_with_logits' mean
        z = logits[:, outputs.index(objective.output)].float()
        return F.binary_cross_entropy_with_logits(z, target)
    else:
        log_p, log_q = _log_probs(logits.float(), outputs, objective.output)
        per_row = -(target * log_p + (1.0 - target) * log_q)
    row_weight = torch.ones_like(per_row) if weight is None else weight.float()
    if objective.mask is not None:
        row_weight = row_weight * (labels[:, objective.mask] == 1).float()
    return (per_row * row_weight).sum() / row_weight.sum().clamp(min=1e-12)


def derive_probabilities(probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output that ``probs`` (output name -> probabilities) implies.

    Adds ``pctcvr = pctr * pcvr`` and ``pcvr = clip(pctcvr / pctr, 0, 1)`` where missing.
    """
    out = dict(probs)
    if "pctcvr" not in out and "pctr" in out and "pcvr" in out:
        out["pctcvr"] = out["pctr"] * out["pcvr"]
    if "pcvr" not in out and "pctr" in out and "pctcvr" in out:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(out["pctr"] > 0, out["pctcvr"] / out["pctr"], 0.0)
        out["pcvr"] = np.clip(ratio, 0.0, 1.0).astype(out["pctr"].dtype)
    return out
