"""The training loop: :class:`Trainer` (core object) and :func:`fit` (functional API).

The model stays a pure :class:`~adrank.models.base.CTRModel`; the trainer owns the
optimizer (Adam), the loss (:func:`~adrank.train.losses.training_loss`), the device,
checkpoints and the epoch loop. Early stopping, LR decay, logging and checkpointing are
callbacks (:mod:`adrank.train.callbacks`).

Epochs are numbered from 1. ``run_dir`` (optional) receives ``checkpoint.pt`` (after every
epoch, atomic), ``best.pt`` (weights of the best epoch) and ``metrics.jsonl``.

Inside an initialized process group (see :mod:`adrank.train.distributed`) the trainer wraps
the model in ``DistributedDataParallel``, splits the global ``batch_size`` across the ranks,
evaluates a disjoint shard per rank and computes the metrics on the gathered predictions,
so every rank takes the same early-stopping and LR decisions; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adrank.config import TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.device_loader import feed_device
from adrank.debias.position import PositionMethod, build_position_method, registered_name
from adrank.models.base import CTRModel, ModelOutput
from adrank.models.registry import built_params
from adrank.nn.dropout import dropout_kernel
from adrank.outputs import claim_trainer_dir
from adrank.tasks import model_outputs, resolve_objectives
from adrank.train import callbacks as cb
from adrank.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_dict_copy,
)
from adrank.train.distributed import (
    all_reduce_sum,
    broadcast_object,
    get_rank,
    get_world_size,
    is_main_process,
    local_batch_size,
)
from adrank.train.evaluation import (
    Predictions,
    as_eval_loader,
    collect_predictions,
    compute_metrics,
    gather_predictions,
)
from adrank.train.graph_step import CudaGraphs, StepGraph, cuda_graph_unsupported
from adrank.train.guards import (
    TrainingDiverged,
    TrainingInterrupted,
    apply_num_threads,
    check_monitor,
    diverged_error,
    log_interruption,
    sigterm_as_interrupt,
    warn_few_steps,
)
from adrank.train.losses import net_regularized_parameters, training_loss
from adrank.train.optim import build_optimizer, clip_grad_norm
from adrank.train.sampling import correct_predictions
from adrank.train.step import (  # noqa: F401  (eager_fallback: re-exported)
    Tf32,
    check_sparse_embeddings,
    eager_fallback,
    training_forward,
    wrap_ddp,
)
from adrank.utils import atomic_write, seed_everything

__all__ = [
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_num_threads",
    "check_device",
    "fit",
]

logger = logging.getLogger(__name__)

# Settings that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {
    "max_epochs", "progress", "device", "num_threads", "eval_batch_size", "device_data_fraction",
    "cuda_graph",
}  # fmt: skip


@dataclass
class TrainState:
    """Everything about training progress that a checkpoint must restore."""

    epoch: int = 0  # last completed epoch
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    improved: bool = True
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    ``best_valid`` holds the validation metrics of ``best_epoch`` (without the ``val_``
    prefix); ``train_time_s`` is the wall time of all epochs (training + validation);
    ``train_samples_per_s`` counts training steps only.
    """

    best_epoch: int
    epochs_run: int
    best_valid: dict[str, float]
    test: dict[str, float] | None
    train_time_s: float
    train_samples_per_s: float
    history: list[dict[str, Any]]


class Trainer:
    """Train a :class:`CTRModel` with Adam, early stopping and checkpoints.

    Args:
        model: the model (moved to ``config.device``).
        config: training settings (BARS defaults).
        run_dir: where checkpoints and ``metrics.jsonl`` go; ``None`` writes nothing.
        callbacks: extra callbacks, run after the built-in ones.
        force_progress: show the progress bar even when stderr is not a TTY.
        position: the position-aware training method (``train.position_method``, see
            :mod:`adrank.debias.position`); built from ``config`` when not given. Its
            parameters (towers, a teacher) are trained and checkpointed with the model's.
        run_identity: what the checkpoint must have been trained with to be resumed (plain
            values: the model name, its parameters, a digest of the training data); saved
            in every checkpoint, and a resume whose identity differs is refused.
    """

    def __init__(
        self,
        model: CTRModel,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        callbacks: Sequence[cb.Callback] = (),
        *,
        force_progress: bool = False,
        position: PositionMethod | None = None,
        run_identity: dict[str, Any] | None = None,
    ) -> None:
        self.config = config = config or TrainConfig()
        self.device = check_device(config.device)
        # as a checkpoint stores it (tuples become lists), so the two compare equal
        self.run_identity = (
            None if run_identity is None else json.loads(json.dumps(run_identity, default=str))
        )
        self._batch_device = self.device  # "cuda" resolved to its index, to compare batches
        if self.device.type == "cuda" and self.device.index is None:
            self._batch_device = torch.device("cuda", torch.cuda.current_device())
        if config.amp and self.device.type != "cuda":
            logger.warning("amp=True is ignored on %s: mixed precision is CUDA-only", self.device)
        self.amp = config.amp and self.device.type == "cuda"
        if config.tf32 is True and self.device.type != "cuda":
            logger.warning("tf32=True is ignored on %s: TF32 matmuls are CUDA-only", self.device)
        self.model = model.to(self.device)
        self.rank, self.world_size = get_rank(), get_world_size()
        #: every process count this run has trained with (more than one after a resume in
        #: another count; ``metrics.json`` records them)
        self.world_sizes = [self.world_size]
        self._ddp = wrap_ddp(model, self.device) if self.world_size > 1 else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None and is_main_process():
            claim_trainer_dir(self.run_dir)  # never replaces a file the user owns
        if config.sparse_embeddings:
            check_sparse_embeddings(config, self.world_size, self.amp)
        self.position = position
        if position is None and config.position_method != "none":
            self.position = build_position_method(
                config, model, model_name=registered_name(model), params=built_params(model)
            )  # kd's teacher of the student's architecture gets the student's hyperparameters
        elif position is None and config.distill != "none":  # adrank.debias.distill
            from adrank.debias.distill import build_distill_method

            self.position = build_distill_method(config, model)
        trainable: torch.nn.Module = self.model
        towers: list[torch.nn.Parameter] = []
        if self.position is not None:
            if self.world_size > 1 or config.sparse_embeddings:
                raise ValueError(
                    f"{_strategy(config)} is single-process only and "
                    "does not support sparse_embeddings"
                )
            self.position.to(self.device)
            towers = self.position.tower_parameters()
            trainable = torch.nn.ModuleList([self.model, *self.position.base_modules()])
        graphed = config.cuda_graph is not False and self._cuda_graph_supported(config)
        self.optimizer = build_optimizer(
            trainable,
            config.learning_rate,
            self.device,
            config.sparse_embeddings,
            config.adam_implementation,
            capturable=graphed,  # Adam's step count on the device, for CUDA graphs
        )
        if towers:  # examination towers learn faster (TrainConfig.position_lr_scale)
            lr = config.learning_rate * config.position_lr_scale
            self.optimizer.add_param_group({"params": towers, "lr": lr})
        self._training_forward = training_forward(
            self.model, config, self.device, self._ddp, graphed=graphed
        )
        self._params = [p for p in trainable.parameters() if p.requires_grad] + towers
        # Which outputs are trained against which labels: checked before any training.
        self.objectives = resolve_objectives(model, model.feature_map, config.task)
        if self.position is not None and len(self.objectives) != 1:
            raise ValueError(
                f"{_strategy(config)} trains one click output; "
                f"this model trains {[o.output for o in self.objectives]} (set train.task)"
            )
        self.outputs = model_outputs(model, model.feature_map, config.task)
        self._net_params = net_regularized_parameters(model) if config.net_regularizer > 0 else []
        self._amp_dtype = torch.float32
        self._scaler: torch.amp.GradScaler | None = None
        if self.amp:
            bf16 = torch.cuda.is_bf16_supported()
            self._amp_dtype = torch.bfloat16 if bf16 else torch.float16
            self._scaler = None if bf16 else torch.amp.GradScaler("cuda")
        self._graph: StepGraph | None = None
        if graphed:
            self._graph = StepGraph(
                self._step,
                self.optimizer,
                CudaGraphs(self.device),
                asked=config.cuda_graph is True,
            )
        self.state = TrainState()
        self.steps_per_epoch: int | None = None
        #: the gradient norm before clipping of the last step (``None`` before the first
        #: clipped step), updated in place so a recorded CUDA graph updates it too
        self.last_grad_norm: torch.Tensor | None = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._seen = 0
        #: where fit is (for the message of an interruption) and the epoch checkpoint.pt holds
        self.where = "before the first epoch"
        self.checkpoint_epoch = 0
        self.host_train: Iterable[Batch] | None = None
        self.callbacks: list[cb.Callback] = [
            cb.EarlyStopping(config.monitor, config.patience),
            cb.LRDecayOnPlateau(config.lr_decay_factor, config.min_lr),
        ]
        if self.run_dir is not None:
            self.callbacks += [
                cb.MetricsLogger(self.run_dir / "metrics.jsonl"),
                cb.Checkpoint(self.checkpoint_path),
            ]
        if is_main_process() and (force_progress or (config.progress and sys.stderr.isatty())):
            self.callbacks.append(cb.ProgressBar())
        self.callbacks += list(callbacks)

    # ----------------------------------------------------------------- paths / state
    @property
    def checkpoint_path(self) -> Path:
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir, so it has no checkpoint path")
        return self.run_dir / "checkpoint.pt"

    def _cuda_graph_supported(self, config: TrainConfig) -> bool:
        """Whether ``cuda_graph`` (``true`` or ``auto``) applies to this run; if not, one
        warning for ``true``, and for ``auto`` on CUDA an info line."""
        fp16 = self.amp and not torch.cuda.is_bf16_supported()
        strategy = None if self.position is None else _strategy(config)
        reason = cuda_graph_unsupported(
            self.device,
            self._ddp is not None,
            strategy,
            config.sparse_embeddings,
            fp16,
            batch_regularizer=config.embedding_regularizer > 0
            and config.embedding_regularizer_scope == "batch",
            model_blocker=self.model.cuda_graph_blocker(),
        )
        if reason is not None and config.cuda_graph is True:
            logger.warning("cuda_graph=True is ignored: %s", reason)
        elif reason is not None and self.device.type == "cuda":
            logger.info("cuda_graph=auto: the step is not recorded: %s", reason)
        return reason is None

    @property
    def step_graph(self) -> StepGraph | None:
        """The recorded step of a ``cuda_graph=True`` run (its counts, any failure), or
        ``None`` when the step is not a CUDA graph."""
        return self._graph

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def running_loss(self) -> float:
        """Mean training loss of the current epoch so far (one device sync)."""
        return float(self._loss_sum.item()) / max(self._seen, 1)

    def record_best(self, epoch: int) -> None:
        """Keep the current weights as the best (in memory and as ``run_dir/best.pt``)."""
        self.state.best_epoch = epoch
        self.state.best_state = state_dict_copy(self.model)
        if self.run_dir is not None and is_main_process():
            best = self.state.best_state
            atomic_write(self.run_dir / "best.pt", lambda tmp: torch.save(best, tmp))

    def save_checkpoint(self, path: str | Path) -> None:
        """Write model, optimizer, training state and RNG states to ``path`` atomically."""
        s = self.state
        payload = {
            "format": CHECKPOINT_FORMAT,
            "epoch": s.epoch,
            "loader_epoch": s.epoch - 1,
            "model": self.model.state_dict(),
            "position": None if self.position is None else self.position.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "lr": self.lr,
            "best_metric": s.best_metric,
            "best_epoch": s.best_epoch,
            "bad_epochs": s.bad_epochs,
            "improved": s.improved,
            "stop": s.stop,
            "history": s.history,
            "best_state": s.best_state,
            "rng": capture_rng_state(),
            "config": dataclasses.asdict(self.config),
            "run": self.run_identity,
            "world_size": self.world_size,
            "world_sizes": self.world_sizes,
        }
        save_checkpoint(path, payload)
        self.checkpoint_epoch = s.epoch

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (RNG states included).

        :class:`CheckpointError` if the file cannot be read or belongs to another run (its
        ``run_identity`` differs): nothing is restored then."""
        hint = "pass --overwrite to start the run over"
        try:
            ckpt = load_checkpoint(path, map_location=self.device)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}; {hint}") from exc
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path}: checkpoint format {ckpt.get('format')!r}, expected "
                f"{CHECKPOINT_FORMAT}; {hint}"
            )
        saved = ckpt.get("run")
        if saved is not None and self.run_identity is not None and saved != self.run_identity:
            raise CheckpointError(
                f"{path} is a checkpoint of another run (changed: "
                f"{'; '.join(_identity_changes(saved, self.run_identity))}); resume it with "
                f"the model, params and training data it was started with, or {hint}"
            )
        now = dataclasses.asdict(self.config)
        changed = sorted(
            k for k, v in ckpt["config"].items() if now.get(k) != v and k not in _RESUMABLE_CHANGES
        )
        if changed:
            logger.warning(
                "resuming %s with changed training settings (they apply from epoch %d on): %s",
                path, ckpt["epoch"] + 1, changed,
            )  # fmt: skip
        saved_world = ckpt.get("world_size")
        if saved_world is not None and saved_world != self.world_size:
            logger.warning(
                "resuming %s, written by %d process(es), in %d: from epoch %d on each "
                "process trains another shard with another per-process batch, so the run "
                "will not repeat an uninterrupted %d-process run",
                path, saved_world, self.world_size, ckpt["epoch"] + 1, saved_world,
            )  # fmt: skip
        self.world_sizes = sorted({*ckpt.get("world_sizes", [saved_world or 1]), self.world_size})
        self.model.load_state_dict(ckpt["model"])
        if self.position is not None and ckpt.get("position") is not None:
            self.position.load_state_dict(ckpt["position"])
        self.optimizer.load_state_dict(ckpt["optimizer"])  # its learning rates too
        saved_lr = ckpt["config"].get("learning_rate")
        if isinstance(saved_lr, (int, float)) and 0 < saved_lr != self.config.learning_rate:
            # a changed train.learning_rate applies, with the decays so far kept (the
            # optimizer state alone would silently resume at the checkpoint's rate)
            scale = self.config.learning_rate / saved_lr
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * scale
            logger.info(
                "learning_rate %g -> %g: the learning rate is now %.3g",
                saved_lr, self.config.learning_rate, self.lr,
            )  # fmt: skip
        for group in self.optimizer.param_groups:  # this run's mode, not the checkpoint's
            if "capturable" in group:  # (a cuda_graph run's checkpoint resumed on CPU)
                group["capturable"] = self._graph is not None
        if self._graph is not None:  # new optimizer state tensors: record again
            self._graph.invalidate()
        if self._scaler is not None and ckpt.get("scaler"):
            self._scaler.load_state_dict(ckpt["scaler"])
        best_state = ckpt["best_state"]
        self.state = TrainState(
            epoch=ckpt["epoch"],
            best_metric=ckpt["best_metric"],
            best_epoch=ckpt["best_epoch"],
            bad_epochs=ckpt["bad_epochs"],
            improved=ckpt["improved"],
            stop=ckpt["stop"],
            history=list(ckpt["history"]),
            best_state=None if best_state is None else {k: v.cpu() for k, v in best_state.items()},
        )
        restore_rng_state(ckpt["rng"])
        self.checkpoint_epoch = self.state.epoch
        logger.info("resumed from %s after epoch %d", path, self.state.epoch)

    # ----------------------------------------------------------------- training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:  # no cast cache when the step is a CUDA graph (torch's advice)
            return torch.autocast("cuda", self._amp_dtype, cache_enabled=self._graph is None)
        return contextlib.nullcontext()

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step on ``batch``; returns the detached loss (no device sync)."""
        if self.device.type != "cpu" and batch.labels.device != self._batch_device:
            batch = batch.to(self.device, non_blocking=True)  # a device loader's are there
        # cuda_graph=True: the step recorded as a CUDA graph (adrank.train.graph_step)
        try:
            loss = self._step(batch, "none") if self._graph is None else self._graph(batch)
        except ValueError as exc:
            if len(batch) == 1 and "Expected more than 1 value per channel" in str(exc):
                raise ValueError(
                    f"a training batch of 1 row reached a BatchNorm layer, which cannot train "
                    f"on one row (train.batch_size={self.config.batch_size}): use "
                    "train.batch_size >= 2 (a loader that drops a final batch of 1 row, as "
                    "InMemoryLoader does) or turn the model's batch_norm off"
                ) from exc
            raise
        self._seen += len(batch)
        return loss

    def _step(self, batch: Batch, grads: str) -> torch.Tensor:
        """Forward, loss, backward, clipping and the optimizer's step; ``grads``: what
        happens to the gradients first (``none``: set to None, ``zero``: zeroed in place,
        ``keep``: nothing, see :mod:`adrank.train.graph_step`)."""
        with self._autocast(), dropout_kernel(self.config.dropout_kernel):
            if self._ddp is not None:  # the forward must go through DDP to sync gradients
                logits, aux = self._ddp(batch.features)
                outputs = ModelOutput(logits, aux)
            else:
                features = batch.features
                if self.position is not None:
                    features = self.position.training_features(batch)
                outputs = self._training_forward(features)
            loss = training_loss(
                self.model,
                outputs,
                batch,
                self.config,
                self._net_params,
                self.objectives,
                self.position,
            )
        if grads != "keep":
            self.optimizer.zero_grad(set_to_none=grads == "none")
        clip = self.config.grad_clip_norm
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            if clip is not None:
                self._scaler.unscale_(self.optimizer)
                self._record_grad_norm(clip_grad_norm(self._params, clip))
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            if clip is not None:
                self._record_grad_norm(clip_grad_norm(self._params, clip))
            self.optimizer.step()
        loss = loss.detach()
        self._loss_sum.add_(loss, alpha=len(batch))
        return loss

    def _record_grad_norm(self, norm: torch.Tensor) -> None:
        if self.last_grad_norm is None:
            self.last_grad_norm = torch.zeros((), dtype=norm.dtype, device=norm.device)
        self.last_grad_norm.copy_(norm)

    def _run_epoch(
        self, epoch: int, train: Iterable[Batch], valid: Iterable[Batch] | None
    ) -> dict[str, Any]:
        self.model.train()
        if self.position is not None:
            self.position.train()
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch - 1)
        if self.world_size > 1:
            # Different dropout masks on each rank (all ranks start from one seed so the
            # models are equal), and a pure function of the epoch, so resume is exact.
            torch.manual_seed(self.config.seed + 1_000_003 * epoch + 7_919 * self.rank)
        self.steps_per_epoch = len(train) if hasattr(train, "__len__") else None
        lr = self.lr
        self._loss_sum.zero_()
        self._seen = 0
        for c in self.callbacks:
            c.on_epoch_begin(self, epoch)
        start = time.perf_counter()
        step = 0
        # On CPU each step's loss is checked (reading it costs no device sync), so a
        # diverging run stops at its first NaN step; elsewhere once per epoch (below). One
        # rank of a distributed run must not stop alone (the others would wait for it).
        each_step = self.device.type == "cpu" and self.world_size == 1
        total = "?" if self.steps_per_epoch is None else self.steps_per_epoch
        for step, batch in enumerate(train, start=1):
            self.where = f"in epoch {epoch} at step {step} of {total}"
            loss = self.train_step(batch)
            if each_step and not math.isfinite(value := float(loss)):
                raise diverged_error(self, epoch, step, value, batch)
            for c in self.callbacks:
                c.on_batch_end(self, step, len(batch))
        if step == 0:
            raise ValueError("the training loader yielded no batches")
        self.where = f"after the training steps of epoch {epoch}"
        train_loss = self.running_loss()  # the epoch's only sync
        train_time = time.perf_counter() - start
        if self.world_size > 1:  # global mean loss and sample count over all ranks
            self._sync_buffers()
            loss_sum, seen = all_reduce_sum([train_loss * self._seen, self._seen])
            train_loss, self._seen = loss_sum / max(seen, 1), int(seen)
        if not math.isfinite(train_loss):
            raise diverged_error(self, epoch, None, train_loss)
        if not self._weights_finite():  # the last step can break the weights: not "best"
            raise diverged_error(self, epoch, None, train_loss)
        logs: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        if valid is not None:
            self.where = f"in the validation of epoch {epoch}"
            metrics = self.evaluate(valid)
            logs.update({f"val_{k}": v for k, v in metrics.items()})
        epoch_time = time.perf_counter() - start
        logs.update(
            lr=lr,
            epoch_time_s=epoch_time,
            train_time_s=train_time,
            eval_time_s=epoch_time - train_time,
            train_samples=self._seen,
            train_samples_per_s=self._seen / max(train_time, 1e-12),
        )
        logger.info(
            "epoch %d: %s",
            epoch,
            " ".join(f"{k}={v:.6g}" for k, v in logs.items() if isinstance(v, float)),
        )
        return logs

    def _weights_finite(self) -> bool:
        """Whether every trained parameter and floating buffer is finite (one sync)."""
        tensors = [p.detach() for p in self._params]
        tensors += [b for b in self.model.buffers() if b.is_floating_point()]
        checks = [torch.isfinite(t).all() for t in tensors if t.numel()]
        return not checks or bool(torch.stack([c.to(self.device) for c in checks]).all())

    def evaluate(self, loader: TensorData | Iterable[Batch]) -> dict[str, float]:
        """Metrics on ``loader`` (all predictions first, then :func:`compute_metrics`): a
        split's :class:`TensorData` (batched as ``fit`` batches evaluation splits) or batches.

        In a distributed run ``loader`` is this rank's shard (``as_eval_loader`` with the
        rank; a :class:`TensorData` is sharded so): the predictions of all ranks are
        gathered, rank 0 computes the metrics and every rank gets its result.
        """
        if isinstance(loader, TensorData):
            loader = self._eval_loader(loader)
        feature_map = self.model.feature_map
        if self.world_size == 1:
            predictions = self.predictions(loader)
            return compute_metrics(predictions, feature_map)
        self._sync_buffers()
        predictions = gather_predictions(self.predictions(loader, allow_empty=True))
        metrics = None
        if is_main_process():
            metrics = compute_metrics(predictions, feature_map)
        return broadcast_object(metrics)

    def predictions(
        self, loader: TensorData | Iterable[Batch], *, allow_empty: bool = False
    ) -> Predictions:
        """The model's predictions on ``loader`` (a :class:`TensorData` or batches), named by
        output and corrected for negative down-sampling
        (:func:`adrank.train.sampling.correct_predictions`)."""
        if isinstance(loader, TensorData):
            loader = self._eval_loader(loader)
        predictions = collect_predictions(
            self.model, loader, self.device, self.amp, allow_empty=allow_empty, outputs=self.outputs
        )
        return correct_predictions(predictions, self.config.negative_sampling_rate)

    def _sync_buffers(self) -> None:
        """Make every rank's buffers equal: floating ones (BatchNorm running statistics) become
        the mean over ranks, others rank 0's.

        Each rank updates its running statistics on its own batches (DDP runs with
        ``broadcast_buffers=False``); the running mean is an exponential average, so the mean
        over ranks is the running mean of the global batches, as in one process.
        """
        world = self.world_size
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                torch.distributed.all_reduce(buffer)
                buffer.div_(world)
            else:
                torch.distributed.broadcast(buffer, src=0)

    def _eval_loader(self, data: InMemoryLoader | TensorData | Iterable[Batch]) -> Iterable[Batch]:
        loader = as_eval_loader(data, self.config.eval_batch_size, self.rank, self.world_size)
        return feed_device(loader, self.device, self.config.device_data_fraction)  # CUDA only

    def _train_loader(
        self, train: InMemoryLoader | TensorData | Iterable[Batch]
    ) -> Iterable[Batch]:
        loader = self.host_train = self._host_train_loader(train)
        return feed_device(loader, self.device, self.config.device_data_fraction)  # CUDA only

    def _host_train_loader(
        self, train: InMemoryLoader | TensorData | Iterable[Batch]
    ) -> Iterable[Batch]:
        cfg = self.config
        if isinstance(train, TensorData):
            return InMemoryLoader(
                train,
                local_batch_size(cfg.batch_size, self.world_size),
                shuffle=True,
                seed=cfg.seed,
                rank=self.rank,
                world_size=self.world_size,
            )
        shards = getattr(train, "world_size", None)
        if self.world_size > 1 and (shards, getattr(train, "rank", None)) != (
            self.world_size,
            self.rank,
        ):
            raise ValueError(
                f"the training loader is sharded for rank {getattr(train, 'rank', '?')} of "
                f"{shards or '?'} but this is rank {self.rank} of {self.world_size}; build it "
                "with rank=get_rank(), world_size=get_world_size() (or pass a TensorData)"
            )
        return train

    def fit(
        self,
        train: InMemoryLoader | TensorData | Iterable[Batch],
        valid: InMemoryLoader | TensorData | Iterable[Batch] | None = None,
        test: InMemoryLoader | TensorData | Iterable[Batch] | None = None,
        *,
        resume: bool = False,
    ) -> TrainResult:
        """Train until early stopping or ``max_epochs``, restore the best weights, test.

        ``train`` may be a loader or a :class:`TensorData` (then shuffled with
        ``config.batch_size`` and ``config.seed``); ``valid``/``test`` are re-batched with
        ``eval_batch_size`` when possible. ``resume=True`` continues from
        ``run_dir/checkpoint.pt`` if it exists and reproduces the uninterrupted run.
        """
        cfg = self.config
        if valid is not None:  # a misspelt monitor, before anything else is done
            check_monitor(self, valid)
        seed_everything(cfg.seed, cfg.deterministic)
        apply_num_threads(cfg.num_threads)
        tf32 = Tf32(cfg.resolved_tf32(self.device.type))
        train = self._train_loader(train)
        warn_few_steps(train, cfg.batch_size)
        valid_loader = None if valid is None else self._eval_loader(valid)
        if self.position is not None and valid is not None:
            self.position.attach_validation(valid)
        if resume:
            if self.run_dir is None:
                raise ValueError("resume=True needs a run_dir to find checkpoint.pt in")
            # Every rank loads rank 0's checkpoint (run_dir must be shared across nodes).
            if broadcast_object(self.checkpoint_path.exists()):
                self.load_checkpoint(self.checkpoint_path)
                if self.state.stop or self.state.epoch >= cfg.max_epochs:
                    why = "stopped early" if self.state.stop else "reached train.max_epochs"
                    logger.warning(
                        "the checkpoint is of a finished run (%s after epoch %d): nothing is "
                        "left to train, and its result is reported again; raise "
                        "train.max_epochs (and train.patience) to train on",
                        why,
                        self.state.epoch,
                    )
            else:
                logger.info("no checkpoint at %s: starting from scratch", self.checkpoint_path)
        # SIGTERM stops a single process as Ctrl-C does (a distributed job's workers are
        # stopped by their launcher, and must not wait for each other's cleanup).
        interrupted: KeyboardInterrupt | None = None
        try:
            with sigterm_as_interrupt(self.world_size == 1):
                for c in self.callbacks:
                    c.on_train_begin(self)
                while not self.state.stop and self.state.epoch < cfg.max_epochs:
                    epoch = self.state.epoch + 1
                    logs = self._run_epoch(epoch, train, valid_loader)
                    self.where = f"at the end of epoch {epoch}"
                    self.state.epoch = epoch
                    self.state.history.append(logs)
                    for c in self.callbacks:
                        c.on_epoch_end(self, epoch, logs)
                if self._graph is not None:
                    self._graph.report()
                if self.state.best_state is not None:
                    self.model.load_state_dict(self.state.best_state)
                self.model.eval()
                test_metrics = None
                if test is not None:
                    self.where = "while scoring the test split"
                    test_metrics = self.evaluate(self._eval_loader(test))
                    logger.info("test (epoch %d): %s", self.state.best_epoch, test_metrics)
                result = self._result(test_metrics)
                for c in self.callbacks:
                    c.on_train_end(self, result)
                return result
        except KeyboardInterrupt as exc:
            interrupted = exc
            raise
        finally:
            tf32.restore()
            for c in self.callbacks:
                c.teardown(self)
            if interrupted is not None:  # after the progress bar is gone
                log_interruption(self, interrupted)

    def _result(self, test: dict[str, float] | None) -> TrainResult:
        history = self.state.history
        best = next((h for h in history if h["epoch"] == self.state.best_epoch), {})
        train_time = sum(h["train_time_s"] for h in history)
        return TrainResult(
            best_epoch=self.state.best_epoch,
            epochs_run=self.state.epoch,
            best_valid={k[4:]: v for k, v in best.items() if k.startswith("val_")},
            test=test,
            train_time_s=sum(h["epoch_time_s"] for h in history),
            train_samples_per_s=sum(h["train_samples"] for h in history) / max(train_time, 1e-12),
            history=history,
        )


def check_device(name: str) -> torch.device:
    """``train.device`` as a torch device, or a :class:`ValueError` that names the setting
    when it is no device or one this machine lacks (CUDA on a CPU-only build, ``cuda:3``
    on a machine with one GPU, MPS off macOS)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"train.device={name!r} is not a device; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
            raise ValueError(
                f"train.device={name!r}, but this machine has no CUDA device{build}; "
                "use train.device=cpu"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"train.device={name!r}, but this machine has {count} CUDA device(s): "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"train.device={name!r}, but MPS (Apple silicon GPUs) is not available on this "
            "machine; use train.device=cpu"
        )
    return device


def _identity_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two run identities, one phrase per key."""
    changes = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            changes.append(f"{key} {names}")
        else:
            changes.append(f"{key} {old!r} -> {new!r}")
    return changes


def _strategy(config: TrainConfig) -> str:
    """The training strategy's setting, for error messages."""
    if config.distill != "none":
        return f"distill={config.distill!r}"
    return f"position_method={config.position_method!r}"


def fit(
    model: CTRModel,
    train: InMemoryLoader | TensorData | Iterable[Batch],
    valid: InMemoryLoader | TensorData | Iterable[Batch] | None = None,
    config: TrainConfig | None = None,
    *,
    test: InMemoryLoader | TensorData | Iterable[Batch] | None = None,
    run_dir: str | Path | None = None,
    callbacks: Sequence[cb.Callback] = (),
    resume: bool = False,
    force_progress: bool = False,
) -> TrainResult:
    """Functional API: ``Trainer(model, config, run_dir, callbacks).fit(train, valid, test)``."""
    trainer = Trainer(model, config, run_dir, callbacks, force_progress=force_progress)
    return trainer.fit(train, valid, test, resume=resume)
