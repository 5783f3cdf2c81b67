"""Training: the :class:`Trainer` core object, the functional :func:`fit`, callbacks,
losses, checkpoints and evaluation helpers."""

from adrank.train.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    LRDecayOnPlateau,
    MetricsLogger,
    ProgressBar,
)
from adrank.train.evaluation import compute_metrics, evaluate, metric_names, predict
from adrank.train.losses import bce_loss, embedding_regularization, training_loss
from adrank.train.trainer import (
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    TrainState,
    fit,
)

__all__ = [
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "LRDecayOnPlateau",
    "MetricsLogger",
    "ProgressBar",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "bce_loss",
    "compute_metrics",
    "embedding_regularization",
    "evaluate",
    "fit",
    "metric_names",
    "predict",
    "training_loss",
]
