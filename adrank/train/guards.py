"""Guards of a training run: what stops it cleanly and what it says when it does.

* divergence: a NaN/infinite loss or weights (:class:`TrainingDiverged`, naming the epoch
  and, on CPU, the step; the data are blamed when they hold NaN/infinite values);
* interruption: Ctrl-C or SIGTERM (:class:`TrainingInterrupted`), one line on what the run
  directory keeps;
* settings found wrong before the first step: an unknown ``train.monitor`` (with a "did
  you mean"), an impossible ``train.num_threads``.

The functions take the :class:`~adrank.train.trainer.Trainer` whose state they read.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch

from adrank.config import monitor_names
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap
from adrank.train.evaluation import metric_names

__all__ = [
    "MAX_THREADS_PER_CPU",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_num_threads",
    "check_monitor",
    "diverged_error",
    "has_groups",
    "log_interruption",
    "nonfinite_values",
    "sigterm_as_interrupt",
]

logger = logging.getLogger(__name__)


#: ``train.num_threads`` above this many threads per CPU of the machine is refused (torch and
#: Arrow then fail to start their thread pools, or run out of memory doing so)
MAX_THREADS_PER_CPU = 4


class TrainingDiverged(FloatingPointError):
    """The training loss, or the weights, became NaN or infinite.

    Training stops at once; the files of the last completed epoch (``checkpoint.pt``,
    ``best.pt``, ``metrics.jsonl``) are left as they were, and the model holds the best
    epoch's weights (if an epoch completed). ``step`` is ``None`` where the step is not
    known (the loss is checked per epoch on a GPU and in a distributed run)."""

    def __init__(self, message: str, epoch: int, step: int | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` received SIGTERM (a scheduler's or ``kill``'s stop request); Ctrl-C raises the
    usual :class:`KeyboardInterrupt`. Both leave the files of the last completed epoch, from
    which ``resume=True`` continues."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def diverged_error(
    trainer: Any, epoch: int, step: int | None, loss: float, batch: Batch | None = None
) -> TrainingDiverged:
    """The error of a diverged run, saying what is kept; the model gets the best epoch's
    weights back (the files of the last completed epoch are not touched)."""
    where = f"in epoch {epoch}" + (
        "" if step is None else f" at step {step} of {trainer.steps_per_epoch or '?'}"
    )
    if math.isfinite(loss):
        what = f"the model's weights are NaN or infinite {where} (training loss {loss:.6g})"
    else:
        what = f"training loss is {loss} {where}"
    bad = nonfinite_values(batch) if batch is not None else []
    if not bad and isinstance(trainer.host_train, InMemoryLoader):
        bad = nonfinite_values(trainer.host_train.data.data)
    if bad:
        advice = (
            f"the training data hold NaN or infinite values ({'; '.join(bad)}): fix the "
            "data (a lower learning rate will not help)"
        )
    else:
        advice = "lower train.learning_rate or set train.grad_clip_norm"
    state = trainer.state
    if state.best_state is not None:
        trainer.model.load_state_dict(state.best_state)
    if trainer.run_dir is not None and trainer.checkpoint_epoch:
        kept = (
            f"training stopped; {trainer.checkpoint_path} keeps epoch {trainer.checkpoint_epoch} "
            f"and best.pt the best epoch ({state.best_epoch}): resume continues from "
            "there, with a changed train.learning_rate if you set one"
        )
    elif state.best_state is not None:
        kept = f"training stopped; the model holds the weights of epoch {state.best_epoch}"
    else:
        kept = "training stopped before any epoch completed, so no weights were kept"
    return TrainingDiverged(f"{what}; {advice}; {kept}", epoch, step)


def check_monitor(trainer: Any, valid: object) -> None:
    """Refuse, before training, a ``train.monitor`` that names no metric the validation
    will produce (it would only be found after the first epoch)."""
    feature_map = trainer.model.feature_map
    if not isinstance(feature_map, FeatureMap):
        return
    groups = has_groups(valid)
    names = metric_names(feature_map, trainer.outputs, groups=groups is not False)
    unknown = [n for n in monitor_names(trainer.config.monitor) if n not in names]
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"train.monitor={trainer.config.monitor!r}: {', '.join(map(repr, unknown))} is not a "
        f"validation metric of this run{hint}; the validation metrics are {names}"
    )


def log_interruption(trainer: Any, exc: KeyboardInterrupt) -> None:
    """Log one line on where an interrupted ``fit`` stopped and what it kept."""
    how = "SIGTERM" if isinstance(exc, TrainingInterrupted) else "Ctrl-C (SIGINT)"
    if trainer.run_dir is not None and trainer.checkpoint_epoch:
        kept = (
            f"{trainer.checkpoint_path} holds epoch {trainer.checkpoint_epoch}: resume "
            "(--resume) continues from there"
        )
    elif trainer.run_dir is not None:
        kept = "no epoch had completed, so there is no checkpoint to resume from"
    else:
        kept = "no run_dir, so nothing was saved"
    logger.warning("training stopped by %s %s; %s", how, trainer.where, kept)


def apply_num_threads(num_threads: int | None) -> None:
    """``torch.set_num_threads(num_threads)`` (``None`` or 0: torch's default, unchanged), or
    a :class:`ValueError` naming ``train.num_threads`` when it is more than
    :data:`MAX_THREADS_PER_CPU` threads per CPU of this machine; more threads than CPUs
    only slow training down, with a warning."""
    if not num_threads:
        return
    cpus = os.cpu_count() or 1
    if num_threads > MAX_THREADS_PER_CPU * cpus:
        raise ValueError(
            f"train.num_threads={num_threads}, but this machine has {cpus} CPU(s): use at "
            f"most {cpus}, or leave it unset for torch's default"
        )
    if num_threads > cpus:
        logger.warning(
            "train.num_threads=%d is more than this machine's %d CPU(s): training will be "
            "slower than with %d", num_threads, cpus, cpus,
        )  # fmt: skip
    torch.set_num_threads(num_threads)


@contextlib.contextmanager
def sigterm_as_interrupt(enabled: bool) -> Iterator[None]:
    """While active, SIGTERM raises :class:`TrainingInterrupted` in the main thread (once: a
    second SIGTERM kills the process as usual). Only where SIGTERM has its default action:
    a handler the application installed is left alone."""
    if (
        not enabled
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise TrainingInterrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def nonfinite_values(batch: Batch) -> list[str]:
    """``"feature 'price': 1 value"`` for each floating column of ``batch`` with NaN or
    infinite values (features, labels, roles such as weights)."""
    columns = [(f"feature {k!r}", t) for k, t in batch.features.items()]
    columns += [("labels", batch.labels)] + [(f"role {k!r}", t) for k, t in batch.roles.items()]
    found = []
    for name, tensor in columns:
        if tensor.is_floating_point() and (bad := int((~torch.isfinite(tensor)).sum())):
            found.append(f"{name}: {bad} value{'s' if bad > 1 else ''}")
    return found


def has_groups(data: object) -> bool | None:
    """Whether an evaluation split has groups (``gauc``); ``None`` when it cannot be told
    without reading it (a stream)."""
    if isinstance(data, InMemoryLoader):
        data = data.data
    if isinstance(data, TensorData):
        return "group" in data.data.roles
    return None


#: fewer training steps per epoch than this get a warning (:func:`warn_few_steps`)
FEW_STEPS = 10


def warn_few_steps(train: Any, batch_size: int) -> None:
    """Warn when the training data make fewer than :data:`FEW_STEPS` steps per epoch: a
    batch size meant for millions of rows (4,096) on a small log of one's own gives one or
    two updates per epoch, and the model barely moves from its initialisation."""
    steps = len(train) if hasattr(train, "__len__") else None
    if steps is None or steps >= FEW_STEPS:
        return
    data = getattr(train, "data", None)
    rows = len(data) if data is not None and hasattr(data, "__len__") else None
    size = "" if rows is None else f" of {rows:,} rows"
    hint = "" if rows is None else f" (e.g. train.batch_size={_pow2_at_most(max(rows // 20, 1))})"
    logger.warning(
        "the training data%s make %d step(s) per epoch at train.batch_size=%d: the model is "
        "updated only that often per epoch; a batch size giving 20 or more steps%s learns "
        "more from small data",
        size,
        steps,
        batch_size,
        hint,
    )


def _pow2_at_most(n: int) -> int:
    return 1 << (n.bit_length() - 1)
