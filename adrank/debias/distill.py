"""Knowledge distillation from a frozen teacher run into any registered student model.

Select with ``train.distill`` and name the teacher with ``train.kd_teacher_run`` (a finished
run directory, e.g. a DCNv3 trained on the same dataset):

* ``vanilla`` (Hinton et al., 2015, for one binary output): the student learns
  ``(1 - a) * BCE(z_s, y) + a * T^2 * BCE(z_s / T, sigmoid(z_t / T))`` with ``a =
  train.distill_alpha`` and temperature ``T = train.distill_temperature`` (:class:`VanillaKD`);
* ``trilateral`` (Hu, Wu et al., "Less or More From Teacher: Exploiting Trilateral Geometry
  for Knowledge Distillation", ICLR 2024, "TGeo-KD"): the same loss with a per-sample fusion
  ratio ``a_i = sigmoid(MLP(geometry_i))`` (:class:`TrilateralKD`). The geometry of sample
  ``i`` is the triangle of student prediction S, teacher prediction T and ground truth G
  (intra-sample relations) plus the teacher's mean prediction over the training rows of
  the same class, T-bar (inter-sample relations). The ratio network is trained bilevel:
  every ``train.distill_meta_every`` steps, a one-step look-ahead of the student on the
  training batch (SGD, step ``learning_rate``, through :func:`torch.func.functional_call`)
  is scored by BCE on a random validation batch, and that loss's gradient updates the
  ratio network (Adam, ``train.distill_meta_lr``); the student then takes its ordinary
  step with the (detached) ratios.

The teacher is loaded from its run artifact, frozen (``requires_grad=False``, always in eval
mode) and scores every training batch itself; its feature map must equal the student's
(same dataset preparation), else :class:`DistillError`. Only the student goes into the run
artifact: serving never needs the teacher. The strategy hooks into the one
:class:`~adrank.train.trainer.Trainer` like the position methods of
:mod:`adrank.debias.position` (``loss`` replaces the click objective's loss); its state (the
class means, the ratio network and its optimizer) is saved in the trainer's checkpoints.

For binary outputs a prediction p is the point ``(1 - p, p)``; every edge of the triangle is
then a multiple of ``(-1, 1)``, so the signed differences ``s - y``, ``t - y``, ``s - t``
(and ``s - t_bar``, ``t - t_bar``, ``t_bar - y`` for T-bar) with their absolute values (the
edge lengths up to sqrt(2)) carry the whole geometry: 12 inputs. Deviations from the paper
(whose method section was not available to us; built from its abstract) are listed in
``docs/debiasing.md``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from adrank.config import TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.debias.position import (
    PositionMethod,
    _weighted_mean,
    check_single_click_output,
    weighted_bce,
)
from adrank.models.base import CTRModel
from adrank.tasks import model_outputs, resolve_objectives

__all__ = [
    "DISTILL_METHODS",
    "DistillError",
    "DistillMethod",
    "RatioNetwork",
    "TrilateralKD",
    "VanillaKD",
    "build_distill_method",
    "kd_loss_per_row",
    "load_teacher",
    "trilateral_geometry",
]

logger = logging.getLogger(__name__)


class DistillError(ValueError):
    """The teacher run is missing or does not fit the student's data."""


def load_teacher(
    run_dir: str | Path, student: CTRModel, output: str
) -> tuple[CTRModel, int, float]:
    """The frozen teacher model of ``run_dir``, the index of its logit column ``output`` and
    the log of its negative sampling rate (added to its logits to undo the down-sampling)."""
    from adrank.artifact import ArtifactError, load_artifact

    try:
        artifact = load_artifact(run_dir)
    except ArtifactError as exc:
        raise DistillError(f"train.kd_teacher_run={str(run_dir)!r}: {exc}") from exc
    teacher, fm = artifact.model, artifact.feature_map
    ours = student.feature_map
    if fm.fields != ours.fields or fm.labels != ours.labels:
        theirs = {f.name: (f.kind, f.vocab_size) for f in fm.fields}
        mine = {f.name: (f.kind, f.vocab_size) for f in ours.fields}
        diff = sorted(n for n in set(theirs) | set(mine) if theirs.get(n) != mine.get(n))
        raise DistillError(
            f"train.kd_teacher_run={str(run_dir)!r} was trained on other data than the student: "
            f"fields that differ (kind, vocab size): {diff or 'field order/details'}; labels "
            f"{list(fm.labels)} vs {list(ours.labels)}. Train the teacher on the same dataset "
            "preparation"
        )
    names = model_outputs(teacher, fm, artifact.config.train.task)
    if output not in names:
        raise DistillError(
            f"train.kd_teacher_run={str(run_dir)!r} has outputs {names}, not the student's "
            f"{output!r}"
        )
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    log_rate = math.log(artifact.config.train.negative_sampling_rate)
    return teacher, names.index(output), log_rate


def kd_loss_per_row(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor | float,
    temperature: float,
) -> torch.Tensor:
    """Per-row ``(1 - alpha) * BCE(z_s, y) + alpha * T^2 * BCE(z_s / T, sigmoid(z_t / T))``
    (``alpha`` a float or a per-row tensor)."""
    z = student_logits.float()
    hard = F.binary_cross_entropy_with_logits(z, target.float(), reduction="none")
    soft_target = torch.sigmoid(teacher_logits.float() / temperature)
    soft = F.binary_cross_entropy_with_logits(z / temperature, soft_target, reduction="none")
    return (1.0 - alpha) * hard + alpha * (temperature**2) * soft


def trilateral_geometry(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, class_mean: torch.Tensor
) -> torch.Tensor:
    """(B, 12) inputs of the ratio network from probabilities (B,) of the student and the
    teacher, labels y (B,) and the teacher's mean probability per class ``class_mean`` (2,):
    the signed edges ``s - y, t - y, s - t, s - t_bar, t - t_bar, t_bar - y`` and their
    absolute values (t_bar = class_mean[y])."""
    t_bar = class_mean[target.long()]
    edges = torch.stack(
        [
            student - target,
            teacher - target,
            student - teacher,
            student - t_bar,
            teacher - t_bar,
            t_bar - target,
        ],
        dim=1,
    )
    return torch.cat([edges, edges.abs()], dim=1)


class RatioNetwork(nn.Module):
    """The fusion-ratio MLP: 12 geometry inputs -> ``hidden`` (ReLU) -> a ratio in (0, 1),
    starting at ``initial`` for every sample (zero output weights)."""

    def __init__(self, initial: float, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        initial = min(max(initial, 1e-4), 1 - 1e-4)
        nn.init.constant_(self.net[2].bias, math.log(initial / (1 - initial)))

    def forward(self, geometry: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(geometry).squeeze(-1))


class DistillMethod(PositionMethod):
    """A distillation objective for the student's single trained output (see the module
    docstring). The teacher never trains and stays in eval mode."""

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TrainConfig, student: CTRModel) -> None:
        super().__init__(config)
        check_single_click_output(f"distill={config.distill!r}", student, config)
        objectives = resolve_objectives(student, student.feature_map, config.task)
        if len(objectives) != 1:
            raise DistillError(
                f"distill={config.distill!r} trains one output; this model trains "
                f"{[o.output for o in objectives]} (set train.task)"
            )
        self.objective = objectives[0]
        output = self.objective.output
        names = model_outputs(student, student.feature_map, config.task)
        self.column = names.index(output)
        if not config.kd_teacher_run:
            raise DistillError(f"distill={config.distill!r} needs train.kd_teacher_run=RUN_DIR")
        self.teacher, self.teacher_column, self.teacher_shift = load_teacher(
            config.kd_teacher_run, student, output
        )
        self._student = [student]  # a reference, not a submodule: it is not our state

    def train(self, mode: bool = True) -> DistillMethod:
        super().train(mode)
        self.teacher.eval()  # frozen: no dropout, fixed batch-norm statistics
        return self

    def base_modules(self) -> list[nn.Module]:
        return []  # the teacher is frozen; the ratio network has its own optimizer

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            logits = self.teacher(batch.features)
            logits = logits if logits.dim() == 1 else logits[:, self.teacher_column]
            return logits.float() + self.teacher_shift

    def alpha(
        self, logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor | float:
        return self.config.distill_alpha

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        teacher = self.teacher_logits(batch)
        alpha = self.alpha(logits, teacher, target)
        per_row = kd_loss_per_row(logits, teacher, target, alpha, self.config.distill_temperature)
        return _weighted_mean(per_row, batch)


class VanillaKD(DistillMethod):
    """``vanilla``: one fixed ratio ``train.distill_alpha`` for every sample."""

    name = "vanilla"


class TrilateralKD(DistillMethod):
    """``trilateral``: per-sample ratios from :class:`RatioNetwork`, trained bilevel on
    validation batches (:meth:`attach_validation`)."""

    name = "trilateral"

    def __init__(self, config: TrainConfig, student: CTRModel) -> None:
        super().__init__(config, student)
        self.ratio = RatioNetwork(config.distill_alpha)
        self.meta_optimizer = torch.optim.Adam(self.ratio.parameters(), lr=config.distill_meta_lr)
        # the teacher's mean probability per class over the training rows seen so far
        self.register_buffer("class_sum", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("class_count", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.valid: TensorData | None = None

    def attach_validation(self, valid: Any) -> None:
        if isinstance(valid, InMemoryLoader):
            valid = valid.data
        if not isinstance(valid, TensorData):
            raise DistillError(
                "distill='trilateral' trains its ratio network on validation batches: pass the "
                "validation split to Trainer.fit as a TensorData or InMemoryLoader"
            )
        self.valid = valid

    def get_extra_state(self) -> dict[str, Any]:
        return {"meta_optimizer": self.meta_optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])

    def class_mean(self) -> torch.Tensor:
        prior = torch.tensor([0.0, 1.0], dtype=torch.float64, device=self.class_sum.device)
        mean = torch.where(self.class_count > 0, self.class_sum / self.class_count, prior)
        return mean.float()

    def geometry(
        self, logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        temperature = self.config.distill_temperature
        student = torch.sigmoid(logits.detach().float() / temperature)
        soft = torch.sigmoid(teacher / temperature)
        return trilateral_geometry(student, soft, target.float(), self.class_mean())

    def alpha(
        self, logits: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.ratio(self.geometry(logits, teacher, target))

    def loss(self, logits: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        teacher = self.teacher_logits(batch)
        if self.training:
            with torch.no_grad():
                probs = torch.sigmoid(teacher).double()
                labels = target.long()
                self.class_sum.index_add_(0, labels, probs)
                self.class_count.index_add_(0, labels, torch.ones_like(probs))
            if int(self.steps) % self.config.distill_meta_every == 0:
                self.meta_step(batch, teacher, target)
            self.steps += 1
        alpha = self.alpha(logits, teacher, target)
        per_row = kd_loss_per_row(logits, teacher, target, alpha, self.config.distill_temperature)
        return _weighted_mean(per_row, batch)

    def _logits(self, params: dict, buffers: dict, features: dict) -> torch.Tensor:
        logits = functional_call(self._student[0], (params, buffers), (features,))
        return logits if logits.dim() == 1 else logits[:, self.column]

    def validation_batch(self) -> Batch:
        """``batch_size`` random validation rows, drawn from a generator seeded by the
        step, so that a resumed run draws the same rows."""
        if self.valid is None:
            raise DistillError("distill='trilateral' needs validation data (Trainer.fit valid=)")
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(self.steps))
        rows = min(self.config.batch_size, len(self.valid))
        idx = torch.randperm(len(self.valid), generator=generator)[:rows]
        device = self.class_sum.device
        return self.valid.data.map(lambda t: t.index_select(0, idx).to(device))

    def meta_step(self, batch: Batch, teacher: torch.Tensor, target: torch.Tensor) -> None:
        """One outer step of the ratio network: the student's look-ahead on ``batch`` with
        the current ratios, scored by BCE on a validation batch."""
        model = self._student[0]
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        # clones: the look-ahead forwards must not move the batch-norm running statistics
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        logits = self._logits(params, buffers, batch.features)
        alpha = self.ratio(self.geometry(logits, teacher, target))
        per_row = kd_loss_per_row(logits, teacher, target, alpha, self.config.distill_temperature)
        inner = _weighted_mean(per_row, batch)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        step = self.config.learning_rate
        ahead = {n: p - step * g for (n, p), g in zip(params.items(), grads, strict=True)}
        valid = self.validation_batch()
        labels = self.objective.target(valid.labels).float()
        outer = weighted_bce(self._logits(ahead, buffers, valid.features), labels, valid)
        ratio_grads = torch.autograd.grad(outer, list(self.ratio.parameters()))
        for p, g in zip(self.ratio.parameters(), ratio_grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()


DISTILL_METHODS: dict[str, type[DistillMethod]] = {m.name: m for m in (VanillaKD, TrilateralKD)}


def build_distill_method(config: TrainConfig, student: CTRModel) -> DistillMethod | None:
    """The strategy for ``config.distill`` (``None`` for ``none``)."""
    if config.distill == "none":
        return None
    return DISTILL_METHODS[config.distill](config, student)
