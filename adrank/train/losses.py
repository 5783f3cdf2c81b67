"""Training objective: the tasks' losses + the model's auxiliary loss + L2 regularizers.

Regularizers follow FuxiCTR's convention, lambda / 2 * ||W||^2:

* embedding regularizer on every :class:`FeatureEmbedding` of the model; scope ``"table"``
  counts every row of every table (FuxiCTR), scope ``"batch"`` only the rows the batch uses
  (each distinct row once);
* net regularizer on the weight matrices (ndim >= 2) of every non-embedding module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from adrank.config import TrainConfig
from adrank.data.batches import Batch
from adrank.models.base import CTRModel, ModelOutput
from adrank.tasks import Objective, model_outputs, objective_loss, resolve_objectives

if TYPE_CHECKING:
    from adrank.debias.position import PositionMethod

__all__ = [
    "bce_loss",
    "embedding_regularization",
    "net_regularization",
    "net_regularized_parameters",
    "task_loss",
    "training_loss",
]


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of (B,) logits against (B,) or the first column of (B, T)
    labels, computed in float32 even under AMP."""
    logits = logits.float()
    target = labels[:, 0] if labels.dim() == 2 else labels
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def task_loss(
    logits: torch.Tensor,
    outputs: list[str],
    objectives: Sequence[Objective],
    batch: Batch,
) -> torch.Tensor:
    """The weighted sum of the objectives' mean losses (see :func:`adrank.tasks.objective_loss`).

    ``logits`` are (B,) for a single-output model or (B, K) with one column per name in
    ``outputs``. A ``weight`` role in the batch weights the rows.
    """
    if logits.dim() == 1:
        logits = logits.unsqueeze(1)
    weight = batch.roles.get("weight")
    total: torch.Tensor | None = None
    for objective in objectives:
        loss = objective_loss(logits, outputs, objective, batch.labels, weight)
        if objective.weight != 1.0:
            loss = loss * objective.weight
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("no training objective: the model has no output with a label")
    return total


def embedding_regularization(
    model: CTRModel,
    weight: float,
    features: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``weight / 2 * sum of squared embedding entries`` over the model's embeddings.

    ``features=None`` is the "table" scope; passing the batch features is the "batch" scope.
    """
    modules = model.embedding_modules()
    if not modules:
        return torch.zeros(())
    total = sum(m.l2_penalty(features) for m in modules)
    return (weight / 2.0) * total  # type: ignore[return-value]


def net_regularized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weight matrices (ndim >= 2) outside the model's embedding modules."""
    embedding_params = {
        id(p) for m in getattr(model, "embedding_modules", lambda: [])() for p in m.parameters()
    }
    return [
        p
        for p in model.parameters()
        if p.requires_grad and p.dim() >= 2 and id(p) not in embedding_params
    ]


def net_regularization(params: Sequence[torch.Tensor], weight: float) -> torch.Tensor:
    """``weight / 2 * sum ||W||^2`` over ``params``."""
    if not params:
        return torch.zeros(())
    return (weight / 2.0) * sum(p.pow(2).sum() for p in params)  # type: ignore[return-value]


def training_loss(
    model: CTRModel,
    outputs: ModelOutput,
    batch: Batch,
    config: TrainConfig,
    net_params: Sequence[torch.Tensor] | None = None,
    objectives: Sequence[Objective] | None = None,
    position: PositionMethod | None = None,
) -> torch.Tensor:
    """The full training objective for one batch (a scalar tensor).

    The tasks' losses (:func:`task_loss`; ``objectives`` default to
    :func:`adrank.tasks.resolve_objectives` with ``config.task``) +
    ``model.auxiliary_loss(outputs, targets, batch)`` + embedding regularizer (scope from
    ``config.embedding_regularizer_scope``) + net regularizer. ``net_params`` caches
    :func:`net_regularized_parameters` across steps. ``targets`` are the objectives' labels:
    (B,) for one objective, (B, K) for several. A ``position`` method
    (:mod:`adrank.debias.position`) replaces the task loss of the single click objective.
    """
    if objectives is None:
        objectives = resolve_objectives(model, model.feature_map, config.task)
    names = model_outputs(model, model.feature_map, config.task)
    if position is not None:
        objective = objectives[0]
        logits = outputs.logits
        column = logits if logits.dim() == 1 else logits[:, names.index(objective.output)]
        loss = position.loss(column, objective.target(batch.labels).float(), batch)
    else:
        loss = task_loss(outputs.logits, names, objectives, batch)
    if len(objectives) == 1:
        targets = objectives[0].target(batch.labels)
    else:
        targets = torch.stack([o.target(batch.labels) for o in objectives], dim=1)
    aux = model.auxiliary_loss(outputs, targets, batch)
    if aux is not None:
        loss = loss + aux.float()
    if config.embedding_regularizer > 0:
        features = None if config.embedding_regularizer_scope == "table" else batch.features
        loss = loss + embedding_regularization(model, config.embedding_regularizer, features)
    if config.net_regularizer > 0:
        if net_params is None:
            net_params = net_regularized_parameters(model)
        loss = loss + net_regularization(net_params, config.net_regularizer)
    return loss
