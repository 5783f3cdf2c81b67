"""Position-aware training: strategies that wrap any registered model.

Clicks in logged lists depend on where an item was shown. A strategy learns the model's
*relevance* probability from such clicks; the exported model stays position-free (except for
``feature``, which serves at a fixed position). Select one with ``train.position_method``:

* ``feature``: the position is an extra categorical input field of the model
  (:class:`PositionFeatureModel`); serving, validation and test use the fixed position
  ``train.position_serving`` (default 1, the top slot).
* ``pal``: PAL (Guo et al., RecSys 2019): ``p(click) = p(examined | position) * p(relevant |
  x)``; the position tower's probability multiplies the model's in training and is dropped at
  serving (:class:`PALMethod`).
* ``kd``: position knowledge distillation (Liu et al., "Rethinking Position Bias Modeling with
  Knowledge Distillation for CTR Prediction", 2022): a teacher with position features is
  trained on the clicks alongside the position-free student, which learns from the clicks
  and from the teacher's probability at ``position_serving`` (:class:`PositionKDMethod`).
* ``ips``: BCE with inverse examination-propensity weights from the ``examination`` role,
  clipped below at ``train.ips_clip`` (:class:`IPSMethod`).
* ``dla``: the dual learning algorithm (Ai et al., "Unbiased Learning to Rank with Unbiased
  Propensity Estimation", SIGIR 2018): an examination tower and the relevance model are
  learned together, each weighted by the other's inverse estimate (:class:`DLAMethod`).

The examination of position 1 is fixed at 1 in PAL and DLA: the product ``examination x
relevance`` only determines the pair up to a common scale, and DLA's propensities are
relative to the first position. A method is an ``nn.Module`` whose parameters (towers, the
teacher) the :class:`~adrank.train.trainer.Trainer` optimizes with the model's (the towers at
``position_lr_scale`` times the learning rate) and saves in its checkpoints; only the model
goes into the run artifact.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adrank.config import TrainConfig
from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models.base import CTRModel, ModelOutput
from adrank.models.registry import build_model

__all__ = [
    "POSITION_FIELD",
    "POSITION_METHODS",
    "DLAMethod",
    "FeaturePositionMethod",
    "IPSMethod",
    "PALMethod",
    "PositionDataError",
    "PositionFeatureModel",
    "PositionKDMethod",
    "PositionMethod",
    "build_position_method",
    "build_position_model",
    "registered_name",
    "with_position_field",
]

logger = logging.getLogger(__name__)

#: the model input field that carries the (clipped) position in ``feature`` and ``kd``
POSITION_FIELD = "__position__"


class PositionDataError(ValueError):
    """The data lack what a position method needs (a role column)."""


def with_position_field(feature_map: FeatureMap, position_max: int) -> FeatureMap:
    """``feature_map`` plus a categorical field :data:`POSITION_FIELD` with ids 1..position_max
    (0 is unused: positions are clipped to ``[1, position_max]``)."""
    field = FieldInfo(POSITION_FIELD, "categorical", vocab_size=position_max + 1)
    return dataclasses.replace(feature_map, fields=(*feature_map.fields, field))


def clipped_positions(positions: torch.Tensor, position_max: int) -> torch.Tensor:
    """Positions (B,) as int64 ids in ``[1, position_max]`` (1 = top)."""
    return positions.long().clamp(1, position_max)


def check_positions(positions: torch.Tensor) -> None:
    """A :class:`PositionDataError` naming the first position (B,) below 1 or not finite.

    Positions count from 1 (the top slot). Clipping a 0-based or negative position to 1
    would silently merge it into the top slot, whose examination PAL and DLA fix at 1."""
    bad = positions < 1
    if positions.is_floating_point():
        bad = bad | ~torch.isfinite(positions)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        value = positions[row].item()
        raise PositionDataError(
            f"role 'position': found {value!r} in row {row} of a training batch; positions "
            "count from 1 (1 = the top slot) and must be finite. For 0-based positions, add 1 "
            "to the column"
        )


class PositionFeatureModel(CTRModel):
    """A registered model with the position as one more categorical input field.

    ``forward(features)`` uses ``features[POSITION_FIELD]`` when present (training) and the
    fixed ``serving_position`` otherwise (validation, test, serving), so the served model
    needs no position in the request.
    """

    def __init__(
        self, feature_map: FeatureMap, inner: CTRModel, position_max: int, serving_position: int
    ) -> None:
        super().__init__(feature_map)
        self.inner = inner
        self.position_max = position_max
        self.serving_position = serving_position
        self.outputs = inner.outputs
        self.trained_outputs = inner.trained_outputs

    def with_position(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if POSITION_FIELD in features:
            return features
        rows = next(iter(features.values())).shape[0]
        device = next(iter(features.values())).device
        position = torch.full((rows,), self.serving_position, dtype=torch.long, device=device)
        return {**features, POSITION_FIELD: position}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner(self.with_position(features))

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        return self.inner.training_outputs(self.with_position(features))

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        return self.inner.auxiliary_loss(outputs, labels, batch)


def build_position_model(
    name: str, feature_map: FeatureMap, params: dict[str, Any], config: TrainConfig
) -> CTRModel:
    """The model a run trains and serves: ``build_model(name, ...)``, wrapped in a
    :class:`PositionFeatureModel` when ``config.position_method == "feature"``."""
    if config.position_method != "feature":
        return build_model(name, feature_map, **params)
    inner = build_model(name, with_position_field(feature_map, config.position_max), **params)
    return PositionFeatureModel(feature_map, inner, config.position_max, config.position_serving)


def _weighted_mean(per_row: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean of ``per_row`` (B,) under the batch's ``weight`` role (if any)."""
    weight = batch.roles.get("weight")
    if weight is None:
        return per_row.mean()
    weight = weight.float()
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Plain BCE-with-logits, weighted by the batch's ``weight`` role."""
    per_row = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return _weighted_mean(per_row, batch)


def ips_bce(logits: torch.Tensor, target: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """Per-row unbiased BCE for clicks observed with probability ``propensity`` (B,):
    ``-(c/e) log p - (1 - c/e) log(1 - p)`` (Saito et al., WSDM 2020). Its expectation over
    the examination draw is the BCE against the relevance label. ``propensity`` must already
    be clipped away from 0."""
    ratio = target / propensity
    logits = logits.float()
    return -(ratio * F.logsigmoid(logits) + (1.0 - ratio) * F.logsigmoid(-logits))


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p < 0``, computed stably."""
    log_p = log_p.clamp(max=-1e-7)
    return torch.where(
        log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p))
    )


class PositionMethod(nn.Module):
    """A position-aware training objective wrapped around the model's single click output.

    Subclasses set :attr:`name` and :attr:`roles` and implement :meth:`loss`; they may
    override :meth:`training_features` (inputs of the model's training forward) and
    :meth:`examination_curve` (the learned examination by position, relative to position 1).
    """

    name: ClassVar[str] = ""
    #: roles of the batch this method reads
    roles: ClassVar[tuple[str, ...]] = ("position",)

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.position_max = config.position_max
        self.config = config

    def check_roles(self, available: list[str]) -> None:
        """A clear error when the data lack a role this method needs."""
        for role in self.roles:
            if role not in available:
                raise PositionDataError(
                    f"position_method={self.name!r} needs a {role!r} column: declare it in the "
                    f"schema's roles (roles: {{{role}: COLUMN}}); the data declare roles "
                    f"{sorted(available)}"
                )

    def tower_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at ``position_lr_scale`` x the learning rate (the towers)."""
        tower = getattr(self, "tower", None)
        return [] if tower is None else list(tower.parameters())

    def base_modules(self) -> list[nn.Module]:
        """Child modules trained at the model's learning rate (e.g. a KD teacher)."""
        return [m for name, m in self.named_children() if name != "tower"]

    def attach_validation(self, valid: Any) -> None:
        """Called by :meth:`Trainer.fit` with its validation data (unused by default; the
        trilateral KD of :mod:`adrank.debias.distill` learns from it)."""

    def role(self, batch: Batch, role: str) -> torch.Tensor:
        value = batch.roles.get(role)
        if value is None:
            self.check_roles(list(batch.roles))
        return value  # type: ignore[return-value]

    def positions(self, batch: Batch) -> torch.Tensor:
        """The batch's positions as ids in ``[1, position_max]``: positions above
        ``position_max`` share its slot; a position below 1 or not finite is a
        :class:`PositionDataError` (positions count from 1, the top slot)."""
        raw = self.role(batch, "position")
        check_positions(raw)
        return clipped_positions(raw, self.position_max)

    def training_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The inputs of the model's training forward (default: the batch's features)."""
        return batch.features

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The click objective for the model's logits (B,) and click labels (B,)."""
        raise NotImplementedError

    def examination_curve(self) -> np.ndarray | None:
        """Learned examination probability of positions 1..position_max relative to
        position 1, or ``None`` when the method learns none."""
        return None


class FeaturePositionMethod(PositionMethod):
    """``feature``: the model (a :class:`PositionFeatureModel`) sees the observed position in
    training; plain BCE on the clicks."""

    name = "feature"

    def training_features(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {**batch.features, POSITION_FIELD: self.positions(batch)}

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        return weighted_bce(logits, target, batch)


class _ExaminationTower(nn.Module):
    """A shallow position tower: position -> examination logit, position 1 fixed at
    examination 1 (``log_examination`` returns 0 there)."""

    def __init__(self, position_max: int) -> None:
        super().__init__()
        self.logit = nn.Embedding(position_max + 1, 1)
        nn.init.zeros_(self.logit.weight)

    def log_examination(self, positions: torch.Tensor) -> torch.Tensor:
        """(B,) log-probability that the slot of each position is examined."""
        log_e = F.logsigmoid(self.logit(positions).squeeze(-1).float())
        return torch.where(positions == 1, torch.zeros_like(log_e), log_e)

    def curve(self) -> np.ndarray:
        positions = torch.arange(1, self.logit.num_embeddings, device=self.logit.weight.device)
        with torch.no_grad():
            return self.log_examination(positions).exp().cpu().numpy().astype(np.float64)


class PALMethod(PositionMethod):
    """PAL: BCE of ``sigmoid(model) * examination(position)`` against the clicks."""

    name = "pal"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.tower = _ExaminationTower(config.position_max)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        log_p = F.logsigmoid(logits.float()) + self.tower.log_examination(self.positions(batch))
        per_row = -(target * log_p + (1.0 - target) * log1mexp(log_p))
        return _weighted_mean(per_row, batch)

    def examination_curve(self) -> np.ndarray:
        return self.tower.curve()


class IPSMethod(PositionMethod):
    """IPS: :func:`ips_bce` with the ``examination`` role clipped below at ``ips_clip``."""

    name = "ips"
    roles = ("examination",)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        propensity = self.role(batch, "examination").float().clamp(min=self.config.ips_clip)
        return _weighted_mean(ips_bce(logits, target, propensity), batch)


class DLAMethod(PositionMethod):
    """DLA, pointwise: the relevance model learns by :func:`ips_bce` with the examination
    tower's estimate as propensity (inverse propensity weighting); the tower learns by the
    same loss with the model's relevance estimate in its place (inverse relevance
    weighting, the paper's dual). Both estimates are detached and clipped below at
    ``ips_clip``; position 1's examination is fixed at 1 (the paper's propensities are
    relative to the first position).

    The paper's listwise softmax form needs whole lists in each batch, which the
    row-shuffling loader does not give; the pointwise form keeps the probabilities
    calibrated (the paper's framework allows any loss; ULTRA's DLA has a sigmoid one). In
    the pointwise form only position-1 rows pin the common scale of examination and
    relevance, so it converges slowly (see ``benchmarks/results/debias/position.md``)."""

    name = "dla"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.tower = _ExaminationTower(config.position_max)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        positions = self.positions(batch)
        log_e = self.tower.log_examination(positions)
        clip = self.config.ips_clip
        propensity = log_e.detach().exp().clamp(min=clip)
        relevance_loss = _weighted_mean(ips_bce(logits, target, propensity), batch)
        relevance = torch.sigmoid(logits.detach().float()).clamp(min=clip)
        ratio = target / relevance
        per_row = -(ratio * log_e + (1.0 - ratio) * log1mexp(log_e))
        lower = (positions != 1).float()  # position 1's examination is fixed
        examination_loss = _weighted_mean(per_row * lower, batch)
        return relevance_loss + examination_loss

    def examination_curve(self) -> np.ndarray:
        return self.tower.curve()


class PositionKDMethod(PositionMethod):
    """Position KD: a teacher (:class:`PositionFeatureModel`) learns the clicks with the
    observed position; the student (the served model) learns ``(1 - kd_alpha) * BCE(clicks)
    + kd_alpha * BCE(teacher's probability at position_serving)``, the soft label detached."""

    name = "kd"

    def __init__(self, config: TrainConfig, teacher: PositionFeatureModel) -> None:
        super().__init__(config)
        self.teacher = teacher

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        features = {**batch.features, POSITION_FIELD: self.positions(batch)}
        teacher_logits = _single_logit(self.teacher(features))
        teacher_loss = weighted_bce(teacher_logits, target, batch)
        with torch.no_grad():  # the soft label: the teacher at the serving position
            training = self.teacher.training
            self.teacher.eval()
            soft = torch.sigmoid(_single_logit(self.teacher(batch.features)).float())
            self.teacher.train(training)
        alpha = self.config.kd_alpha
        student = (1.0 - alpha) * weighted_bce(logits, target, batch)
        student = student + alpha * weighted_bce(logits, soft, batch)
        loss = teacher_loss + student
        if self.config.embedding_regularizer > 0:  # the teacher is regularized like the model
            from adrank.train.losses import embedding_regularization

            scope = self.config.embedding_regularizer_scope
            reg = embedding_regularization(
                self.teacher,
                self.config.embedding_regularizer,
                None if scope == "table" else batch.features,
            )
            loss = loss + reg
        return loss


def registered_name(model: CTRModel) -> str | None:
    """The registry name of ``model``'s class (``None`` if it is not registered)."""
    from adrank.models.registry import available_models, get_model_class

    return next((n for n in available_models() if get_model_class(n) is type(model)), None)


def _single_logit(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dim() == 1 else logits[:, 0]


def check_single_click_output(
    what: str, model: CTRModel, config: TrainConfig, model_name: str | None = None
) -> None:
    """A clear error unless ``model`` trains one binary output learned on every row.

    A multi-task model trains several outputs (and refuses ``train.task``); a task with a
    ``given`` label (conversion given click) is learned only on the rows where that label
    is 1, which a strategy's loss over every impression would ignore; a regression task
    has no click probability."""
    from adrank.tasks import resolve_objectives

    inner = model.inner if isinstance(model, PositionFeatureModel) else model
    trained = inner.trained_outputs or inner.outputs
    if trained is not None and len(trained) > 1:
        name = model_name or type(inner).__name__
        raise ValueError(
            f"{what} trains one click output; {name!r} is a multi-task model (it trains "
            f"{list(trained)}): use a single-task model, with train.task=NAME on multi-task "
            "data"
        )
    feature_map = model.feature_map
    for objective in resolve_objectives(model, feature_map, config.task):
        if objective.type != "binary":
            raise ValueError(
                f"{what} trains a binary click output; task {objective.task!r} is {objective.type}"
            )
        if objective.mask is not None:
            given = feature_map.labels[objective.mask]
            raise ValueError(
                f"{what} learns from every impression; task {objective.task!r} is learned only "
                f"where {given!r} = 1, so it cannot be trained this way: choose the click task "
                "with train.task=NAME"
            )


POSITION_METHODS: dict[str, type[PositionMethod]] = {
    m.name: m for m in (FeaturePositionMethod, PALMethod, PositionKDMethod, IPSMethod, DLAMethod)
}


def build_position_method(
    config: TrainConfig,
    model: CTRModel,
    *,
    model_name: str | None = None,
    params: dict[str, Any] | None = None,
) -> PositionMethod | None:
    """The strategy for ``config.position_method`` (``None`` for ``none``), checked against
    the roles of ``model.feature_map``.

    ``kd``'s teacher is ``config.kd_teacher`` (a registered model name, default hyperparameters)
    or else the student's own ``model_name`` with ``params``; it gets the position as an
    input field.
    """
    method = config.position_method
    if method == "none":
        return None
    feature_map = model.feature_map
    check_single_click_output(f"position_method={method!r}", model, config, model_name)
    if method == "feature" and not isinstance(model, PositionFeatureModel):
        raise ValueError(
            "position_method='feature' trains a PositionFeatureModel: build the model with "
            "adrank.debias.build_position_model(name, feature_map, params, train_config)"
        )
    if method == "kd":
        name = config.kd_teacher or model_name
        if name is None:
            raise ValueError(
                "position_method='kd' needs a teacher: set train.kd_teacher to a model name"
            )
        teacher_params = dict(params or {}) if name == model_name else {}
        inner = build_model(
            name, with_position_field(feature_map, config.position_max), **teacher_params
        )
        teacher = PositionFeatureModel(
            feature_map, inner, config.position_max, config.position_serving
        )
        strategy: PositionMethod = PositionKDMethod(config, teacher)
    else:
        strategy = POSITION_METHODS[method](config)
    strategy.check_roles(list(feature_map.roles))
    return strategy
