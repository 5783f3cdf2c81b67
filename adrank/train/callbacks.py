"""Small callback objects for :class:`adrank.train.Trainer` (LightGBM style).

The trainer builds the standard ones from its :class:`~adrank.config.TrainConfig`, in this
order, and runs user callbacks after them:

1. :class:`EarlyStopping`: tracks the best validation metric and stops after ``patience``
   non-improving epochs;
2. :class:`LRDecayOnPlateau`: multiplies the learning rate by ``factor`` after every
   non-improving epoch (floor ``min_lr``), like FuxiCTR;
3. :class:`MetricsLogger`: one JSON line per epoch in ``run_dir/metrics.jsonl``;
4. :class:`Checkpoint`: ``run_dir/checkpoint.pt`` after every epoch;
5. :class:`ProgressBar`: a rich progress bar per epoch.

Hooks receive the trainer; the mutable training state is ``trainer.state``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrank.config import monitor_direction, monitor_value
from adrank.train.distributed import barrier, is_main_process
from adrank.utils import atomic_write_text

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from adrank.train.trainer import Trainer, TrainResult

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "LRDecayOnPlateau",
    "MetricsLogger",
    "ProgressBar",
]

logger = logging.getLogger(__name__)


class Callback:
    """Base class: override the hooks you need. Epochs are numbered from 1."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resumed checkpoint is loaded)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Before the first training step of ``epoch``."""

    def on_batch_end(self, trainer: Trainer, step: int, batch_size: int) -> None:
        """After optimizer step ``step`` (1-based within the epoch)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """After training and validation of ``epoch``; ``logs`` is its metrics line."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """After the best weights are restored and the test split is evaluated."""

    def teardown(self, trainer: Trainer) -> None:
        """Always called when ``fit`` exits, also on errors (release resources here)."""


class EarlyStopping(Callback):
    """Track the best ``val_<monitor>``; stop after ``patience`` non-improving epochs.

    An epoch improves when the metric beats the best so far by more than ``min_delta``
    (higher is better for ``auc``/``gauc``, lower for ``logloss``). On improvement the
    trainer keeps a copy of the weights (and writes ``best.pt``). Training stops once
    ``max(patience, 1)`` epochs in a row did not improve. Without a validation split every
    epoch counts as an improvement.
    """

    def __init__(
        self, monitor: str | dict[str, float] = "auc", patience: int = 2, min_delta: float = 0.0
    ) -> None:
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.higher_is_better = monitor_direction(monitor)
        self.name = monitor if isinstance(monitor, str) else "monitor"

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.higher_is_better:
            return value > best + self.min_delta
        return value < best - self.min_delta

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        state = trainer.state
        if any(k.startswith("val_") for k in logs):
            value = monitor_value(logs, self.monitor)
            if value is None:
                have = sorted(k[4:] for k in logs if k.startswith("val_"))
                raise KeyError(
                    f"monitor {self.monitor!r} is not among the validation metrics {have}"
                )
            if not isinstance(self.monitor, str):
                logs["val_monitor"] = value
        else:
            value = None
        if value is not None and not math.isfinite(value):
            raise FloatingPointError(f"validation {self.name} is {value} at epoch {epoch}")
        state.improved = value is None or self._improved(value, state.best_metric)
        if state.improved:
            state.best_metric = value
            state.bad_epochs = 0
            trainer.record_best(epoch)
            return
        state.bad_epochs += 1
        logger.info(
            "epoch %d: val_%s=%.6f did not improve on %.6f (epoch %d); %d/%d",
            epoch, self.name, value, state.best_metric, state.best_epoch,
            state.bad_epochs, max(self.patience, 1),
        )  # fmt: skip
        if state.bad_epochs >= max(self.patience, 1):
            state.stop = True
            logger.info("early stopping after epoch %d", epoch)


class LRDecayOnPlateau(Callback):
    """Multiply every param group's LR by ``factor`` after each non-improving epoch, down to
    ``min_lr``; an LR already below ``min_lr`` is kept (the floor never raises it)."""

    def __init__(self, factor: float = 0.1, min_lr: float = 1e-6) -> None:
        self.factor = factor
        self.min_lr = min_lr

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if trainer.state.improved:
            return
        for group in trainer.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.factor, min(self.min_lr, group["lr"]))
        logger.info("learning rate -> %.3g", trainer.optimizer.param_groups[0]["lr"])


def _json_line(record: dict[str, Any]) -> str:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in record.items()}  # fmt: skip
    return json.dumps(clean, sort_keys=False) + "\n"


class MetricsLogger(Callback):
    """Append one JSON line per epoch to ``path``, and a final ``"split": "test"`` line.

    On a resumed run the file is rewritten from the checkpoint's history first, so it never
    holds lines of epochs that were rolled back.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, trainer: Trainer) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(_json_line(h) for h in trainer.state.history))

    def _append(self, record: dict[str, Any]) -> None:
        if is_main_process():
            with self.path.open("a") as fh:
                fh.write(_json_line(record))

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self._append(logs)

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if result.test is not None:
            self._append({"split": "test", "best_epoch": result.best_epoch, **result.test})


class Checkpoint(Callback):
    """Write the full training state to ``path`` (atomically) after every epoch.

    In a distributed run rank 0 writes and every rank waits for it, so a worker that dies
    later leaves this epoch's checkpoint complete for the resumed job.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if is_main_process():
            trainer.save_checkpoint(self.path)
        barrier()


class ProgressBar(Callback):
    """A rich progress bar on stderr per epoch with the running loss and samples/s.

    The loss is read from the device (one host sync) at most every ``refresh_every`` steps
    and at most once per ``min_interval_s`` seconds, so on a GPU the bar costs a sync about
    once a second however short the steps are; other steps only advance the bar.
    """

    def __init__(self, refresh_every: int = 20, min_interval_s: float = 1.0) -> None:
        self.refresh_every = max(1, refresh_every)
        self.min_interval_s = max(0.0, min_interval_s)
        self._last_read = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._start = 0.0
        self._samples = 0

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.teardown(trainer)
        total = trainer.steps_per_epoch
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]} samples/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, epoch=epoch, loss="-", speed="-")
        self._start = self._last_read = time.perf_counter()
        self._samples = 0

    def on_batch_end(self, trainer: Trainer, step: int, batch_size: int) -> None:
        if self._progress is None or self._task is None:
            return
        self._samples += batch_size
        now = time.perf_counter()
        if step % self.refresh_every or now - self._last_read < self.min_interval_s:
            self._progress.advance(self._task)
            return
        self._last_read = now
        speed = self._samples / max(now - self._start, 1e-9)
        self._progress.update(
            self._task,
            advance=1,
            loss=f"{trainer.running_loss():.4f}",
            speed=f"{speed:,.0f}",
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self.teardown(trainer)

    def teardown(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None
