"""adrank: CTR/CVR prediction and ad ranking.

The public API is imported lazily so ``import adrank`` (and the CLI) stays fast::

    from adrank import CTRClassifier, Predictor, Schema, FeatureProcessor, build_model
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CTRClassifier": "adrank.estimator",
    "Schema": "adrank.data.schema",
    "FeatureProcessor": "adrank.data.processor",
    "FeatureMap": "adrank.data.feature_map",
    "prepare_dataset": "adrank.data.prepare",
    "prepare_frames": "adrank.data.prepare",
    "RunConfig": "adrank.config",
    "TrainConfig": "adrank.config",
    "build_model": "adrank.models.registry",
    "available_models": "adrank.models.registry",
    "Trainer": "adrank.train.trainer",
    "fit": "adrank.train.trainer",
    "train_run": "adrank.pipeline",
    "Predictor": "adrank.serve.predictor",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adrank' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
