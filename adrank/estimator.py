"""scikit-learn-style facade for notebooks::

    clf = adrank.CTRClassifier(model="deepfm", params={"hidden_units": [64, 64]})
    clf.fit(train_df, y_train)
    p = clf.predict_proba(test_df)[:, 1]

``fit`` infers a schema from the frame unless one is given (string, categorical, boolean and
integer columns -> categorical; float columns -> numeric with standard scaling), holds out
``valid_fraction`` of the rows for early stopping when no ``eval_set`` is passed, fits a
FeatureProcessor on the training part, and trains with the BARS-protocol Trainer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from adrank.config import SCORE_BATCH_SIZE, RunConfig, TrainConfig, train_config_from_dict
from adrank.data.batches import TensorData, table_to_batch
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema
from adrank.metrics import auc
from adrank.models.base import CTRModel
from adrank.models.registry import build_model

logger = logging.getLogger(__name__)

LABEL = "label"


def _to_polars(X: Any) -> pl.DataFrame:
    if isinstance(X, pl.DataFrame):
        return X
    if type(X).__module__.startswith("pandas"):
        return pl.from_pandas(X)
    if isinstance(X, dict):
        return pl.DataFrame(X)
    raise TypeError(f"X must be a Polars or pandas DataFrame (or a dict of columns), got {type(X)}")


def infer_schema(frame: pl.DataFrame, label: str = LABEL) -> Schema:
    """Categorical for string/categorical/boolean/integer columns, numeric for floats."""
    features: list[dict[str, Any]] = []
    for name, dtype in frame.schema.items():
        if name == label:
            continue
        if dtype.is_float():
            features.append({"name": name, "type": "numeric", "normalizer": "standard"})
        elif dtype.is_integer() or dtype in (pl.Utf8, pl.Categorical, pl.Boolean, pl.Enum):
            features.append({"name": name, "type": "categorical"})
        else:
            raise TypeError(
                f"cannot infer a feature type for column {name!r} of dtype {dtype}; "
                "pass schema= explicitly"
            )
    return Schema.from_dict({"labels": [label], "features": features})


class CTRClassifier:
    """Binary CTR classifier over any registered adrank model.

    Args:
        model: registered model name (``adrank models``).
        params: model hyperparameters (validated against the model's signature).
        train: TrainConfig or a dict of its fields (batch_size, max_epochs, ...).
        schema: optional Schema; inferred from the first ``fit`` frame otherwise.
        valid_fraction: share of rows held out for early stopping when ``eval_set`` is None.
        random_state: seed for the hold-out split and training.
    """

    def __init__(
        self,
        model: str = "deepfm",
        params: dict[str, Any] | None = None,
        train: TrainConfig | dict[str, Any] | None = None,
        schema: Schema | None = None,
        valid_fraction: float = 0.1,
        random_state: int = 2021,
    ) -> None:
        self.model = model
        self.params = params
        self.train = train
        self.schema = schema
        self.valid_fraction = valid_fraction
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers ------
    def _train_config(self) -> TrainConfig:
        if isinstance(self.train, TrainConfig):
            cfg = TrainConfig(**vars(self.train))
        else:
            cfg = train_config_from_dict(dict(self.train or {}))
        cfg.seed = self.random_state
        return cfg

    def _tensors(self, frame: pl.DataFrame) -> TensorData:
        encoded = self.processor_.transform(frame, require_labels=LABEL in frame.columns)
        return TensorData(table_to_batch(encoded.to_arrow(), self.feature_map_))

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this CTRClassifier is not fitted yet; call fit(X, y) first")

    # ---------------------------------------------------------------------- API ------
    def fit(self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None) -> CTRClassifier:
        """Fit on features ``X`` and binary labels ``y`` (array-like of 0/1).

        Validation rows (``eval_set``, or the held-out ``valid_fraction``) of one class are
        refused with a :class:`ValueError` when early stopping follows an AUC (the default):
        the AUC is undefined there."""
        from adrank.pipeline import check_monitorable
        from adrank.train.trainer import Trainer

        frame = _to_polars(X)
        labels = np.asarray(y, dtype=np.float64).reshape(-1)
        if labels.shape[0] != frame.height:
            raise ValueError(f"X has {frame.height} rows but y has {labels.shape[0]}")
        if not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError("y must contain only 0 and 1")
        if LABEL in frame.columns:
            raise ValueError(f"X must not contain a column named {LABEL!r} (pass labels as y)")
        frame = frame.with_columns(pl.Series(LABEL, labels))
        if eval_set is not None:
            train_frame = frame
            valid_frame = _to_polars(eval_set[0]).with_columns(
                pl.Series(LABEL, np.asarray(eval_set[1], dtype=np.float64).reshape(-1))
            )
        elif self.valid_fraction > 0:
            rng = np.random.default_rng(self.random_state)
            is_valid = rng.random(frame.height) < self.valid_fraction
            train_frame, valid_frame = frame.filter(~is_valid), frame.filter(is_valid)
        else:
            train_frame, valid_frame = frame, None
        self.schema_ = self.schema or infer_schema(train_frame)
        self.processor_ = FeatureProcessor(self.schema_).fit(train_frame)
        self.feature_map_ = self.processor_.feature_map()
        cfg = self._train_config()
        self.model_: CTRModel = build_model(self.model, self.feature_map_, **(self.params or {}))
        trainer = Trainer(self.model_, cfg)
        valid = None
        if valid_frame is not None and valid_frame.height > 0:
            valid = self._tensors(valid_frame)
            check_monitorable(valid, trainer.objectives, cfg.monitor)
        result = trainer.fit(self._tensors(train_frame), valid)
        self.history_ = result.history
        self.best_valid_ = result.best_valid
        self.config_ = RunConfig(self.model, dict(self.params or {}), cfg)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, 2) array of [P(no click), P(click)]."""
        from adrank.train.evaluation import predict

        self._check_fitted()
        frame = _to_polars(X)
        data = self._tensors(frame)
        from adrank.data.batches import InMemoryLoader

        p = predict(self.model_, InMemoryLoader(data, SCORE_BATCH_SIZE))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        """ROC AUC of the predicted click probabilities."""
        return auc(np.asarray(y).reshape(-1), self.predict_proba(X)[:, 1])

    def save(self, run_dir: str | Path) -> Path:
        """Write a run directory (artifact) that ``adrank.serve.Predictor`` can load.

        ``run_dir`` must be new, empty or an adrank run directory: a folder of the user's
        is refused (:class:`~adrank.outputs.OutputDirError`), never written into."""
        from adrank.artifact import write_artifact
        from adrank.outputs import claim_dir
        from adrank.pipeline import RUN_FILES

        self._check_fitted()
        run_dir = claim_dir(
            Path(run_dir), "run", legacy_entries=frozenset(RUN_FILES) | {"processor"}
        )
        self.processor_.save(run_dir / "processor")
        return write_artifact(
            run_dir,
            config=self.config_,
            processor_dir=run_dir / "processor",
            feature_map=self.feature_map_,
            model=self.model_,
            metrics={"valid": self.best_valid_, "test": None},
        )
