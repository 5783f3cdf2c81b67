"""scikit-learn-style facade for notebooks::

    clf = adrank.CTRClassifier(model="deepfm", params={"hidden_units": [64, 64]})
    clf.fit(train_df, y_train)
    p = clf.predict_proba(test_df)[:, 1]

``fit`` infers a schema from the frame unless one is given (string, categorical, boolean and
integer columns -> categorical; float columns -> numeric with standard scaling), holds out
``valid_fraction`` of the rows for early stopping when no ``eval_set`` is passed, fits a
FeatureProcessor on the training part, and trains with the BARS-protocol Trainer. A
``train.position_method`` (``docs/debiasing.md``) needs a schema with a ``position`` role.

``get_params``/``set_params`` follow scikit-learn's conventions, so ``sklearn.base.clone``
works; the classifier does not subclass scikit-learn's estimators (scikit-learn is not a
dependency). ``save`` writes a run directory; ``CTRClassifier.load`` (and
``adrank.serve.Predictor``) read it back.
"""

from __future__ import annotations

import logging
import os
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

logger = logging.getLogger(__name__)

LABEL = "label"

#: the constructor's arguments (:meth:`CTRClassifier.get_params`)
PARAMS = ("model", "params", "train", "schema", "valid_fraction", "random_state")


def _binary_labels(y: Any, rows: int, what: str = "y") -> np.ndarray:
    """``y`` as a float64 vector of 0/1, one per row; a clear error otherwise."""
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"{what} must hold one label per row (1-D), got shape {labels.shape}")
    try:
        labels = labels.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must contain only 0 and 1 ({exc})") from None
    if labels.shape[0] != rows:
        raise ValueError(f"X has {rows} rows but {what} has {labels.shape[0]}")
    bad = ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{what} must contain only 0 and 1; found {labels[row].item()!r} in row {row} "
            f"({int(bad.sum())} bad row(s) in total)"
        )
    return labels


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


#: files of an ``adrank train`` run that :meth:`CTRClassifier.save` never writes
TRAINING_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl", "test_predictions.npy")


class CTRClassifier:
    """Binary CTR classifier over any registered adrank model.

    Args:
        model: registered model name (``adrank models``).
        params: model hyperparameters (validated against the model's signature).
        train: TrainConfig or a dict of its fields (batch_size, max_epochs, ...).
        schema: optional Schema (or its dict, or the path of its YAML/JSON file); inferred
            from the first ``fit`` frame otherwise.
        valid_fraction: share of rows held out for early stopping when ``eval_set`` is None.
        random_state: seed for the hold-out split and training.
    """

    def __init__(
        self,
        model: str = "deepfm",
        params: dict[str, Any] | None = None,
        train: TrainConfig | dict[str, Any] | None = None,
        schema: Schema | dict[str, Any] | str | Path | None = None,
        valid_fraction: float = 0.1,
        random_state: int = 2021,
    ) -> None:
        self.model = model
        self.params = params
        self.train = train
        self.schema = schema
        self.valid_fraction = valid_fraction
        self.random_state = random_state

    # ------------------------------------------------------------- sklearn API ------
    #: scikit-learn < 1.6 reads the estimator type from this attribute
    _estimator_type = "classifier"

    def __sklearn_tags__(self) -> Any:
        """scikit-learn >= 1.6's tags: a binary classifier taking a DataFrame, so that
        ``is_classifier``, ``cross_val_score`` and ``GridSearchCV`` treat it as one."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_class=False),
            input_tags=InputTags(two_d_array=True, categorical=True, string=True),
            non_deterministic=False,
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn's convention; ``deep`` is unused)."""
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params: Any) -> CTRClassifier:
        """Set constructor arguments by name (scikit-learn's convention); returns ``self``."""
        for name, value in params.items():
            if name not in PARAMS:
                raise ValueError(
                    f"invalid parameter {name!r} for CTRClassifier; valid: {list(PARAMS)}"
                )
            setattr(self, name, value)
        return self

    # ------------------------------------------------------------------ helpers ------
    def _given_schema(self) -> Schema | None:
        """``schema`` as a :class:`Schema` (a dict or a file's path is read here, so
        ``get_params`` keeps what the user gave)."""
        if self.schema is None or isinstance(self.schema, Schema):
            return self.schema
        if isinstance(self.schema, dict):
            return Schema.from_dict(self.schema)
        if isinstance(self.schema, str | Path):
            return Schema.load(self.schema)
        raise TypeError(
            f"schema must be a Schema, its dict or the path of its file, got "
            f"{type(self.schema).__name__}"
        )

    def _label(self) -> str:
        """The label column: the given schema's one label, else :data:`LABEL`."""
        schema = self._given_schema()
        if schema is None:
            return LABEL
        labels = list(schema.labels)
        if len(labels) != 1:
            raise ValueError(f"CTRClassifier learns one binary label; the schema has {labels}")
        return labels[0]

    def _train_config(self) -> TrainConfig:
        if isinstance(self.train, TrainConfig):
            cfg = TrainConfig(**vars(self.train))
        else:
            cfg = train_config_from_dict(dict(self.train or {}))
        cfg.seed = self.random_state
        return cfg

    def _tensors(self, frame: pl.DataFrame, labels: bool = True) -> TensorData:
        encoded = self.processor_.transform(frame, require_labels=labels)
        return TensorData(table_to_batch(encoded.to_arrow(), self.feature_map_))

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this CTRClassifier is not fitted yet; call fit(X, y) first")

    # ---------------------------------------------------------------------- API ------
    def fit(self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None) -> CTRClassifier:
        """Fit on features ``X`` and binary labels ``y`` (array-like of 0/1).

        Training labels of one class are refused with a :class:`ValueError`. Validation rows
        (``eval_set``, or the held-out ``valid_fraction``) of one class are
        refused with a :class:`ValueError` when early stopping follows an AUC (the default):
        the AUC is undefined there."""
        from adrank.debias.position import build_position_method, build_position_model
        from adrank.pipeline import check_monitorable, check_trainable
        from adrank.train.trainer import Trainer

        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction!r}")
        label = self._label()
        frame = _to_polars(X)
        labels = _binary_labels(y, frame.height)
        if label in frame.columns:
            raise ValueError(f"X must not contain a column named {label!r} (pass labels as y)")
        frame = frame.with_columns(pl.Series(label, labels))
        if eval_set is not None:
            train_frame = frame
            valid_x = _to_polars(eval_set[0])
            valid_y = _binary_labels(eval_set[1], valid_x.height, "eval_set's y")
            if label in valid_x.columns:
                raise ValueError(f"eval_set's X must not contain a column named {label!r}")
            valid_frame = valid_x.with_columns(pl.Series(label, valid_y))
        elif self.valid_fraction > 0:
            rng = np.random.default_rng(self.random_state)
            is_valid = rng.random(frame.height) < self.valid_fraction
            train_frame, valid_frame = frame.filter(~is_valid), frame.filter(is_valid)
        else:
            train_frame, valid_frame = frame, None
        self.schema_ = self._given_schema() or infer_schema(train_frame, label)
        self.processor_ = FeatureProcessor(self.schema_).fit(train_frame)
        self.feature_map_ = self.processor_.feature_map()
        self.label_ = label
        cfg = self._train_config()
        params = dict(self.params or {})
        # position_method=feature wraps the model; kd's teacher gets the model's params
        self.model_: CTRModel = build_position_model(self.model, self.feature_map_, params, cfg)
        self.position_ = build_position_method(
            cfg, self.model_, model_name=self.model, params=params
        )
        trainer = Trainer(self.model_, cfg, position=self.position_)
        train = self._tensors(train_frame)
        check_trainable(train, self.feature_map_, trainer.objectives)
        valid = None
        if valid_frame is not None and valid_frame.height > 0:
            valid = self._tensors(valid_frame)
            check_monitorable(valid, trainer.objectives, cfg.monitor)
        result = trainer.fit(train, valid)
        self.history_ = result.history
        self.best_valid_ = result.best_valid
        self.config_ = RunConfig(self.model, params, cfg)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, 2) array of [P(no click), P(click)]."""
        from adrank.data.batches import InMemoryLoader
        from adrank.train.evaluation import predict

        self._check_fitted()
        # extra columns are ignored; so is a label column (no label is needed to score)
        frame = _to_polars(X).drop(list(self.schema_.labels), strict=False)
        if frame.height == 0:
            return np.empty((0, 2), dtype=np.float64)
        data = self._tensors(frame, labels=False)
        p = predict(self.model_, InMemoryLoader(data, SCORE_BATCH_SIZE))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any, threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        """ROC AUC of the predicted click probabilities."""
        return auc(np.asarray(y).reshape(-1), self.predict_proba(X)[:, 1])

    def save(self, run_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write a run directory (artifact) that :meth:`load` and ``adrank.serve.Predictor``
        can load.

        ``run_dir`` must be new, empty or an adrank run directory: a folder of the user's
        is refused (:class:`~adrank.outputs.OutputDirError`), never written into, and so is
        a run directory whose ``processor`` is a symbolic link (checked before anything is
        written). An earlier save there is replaced; a training run (``adrank train``'s
        checkpoint and metrics) only with ``overwrite=True``. The replaced files are moved
        aside and removed once this one is written (put back if writing fails). The
        processor is written to a temporary folder and swapped in."""
        import tempfile

        from adrank.artifact import write_artifact
        from adrank.outputs import OutputDirError, claim_dir
        from adrank.pipeline import (
            RUN_FILES,
            discard_replaced,
            legacy_run_entries,
            park_run,
            settle_replaced,
        )

        self._check_fitted()
        run_dir = Path(run_dir)
        processor = run_dir / "processor"
        if processor.is_symlink():
            raise OutputDirError(
                f"refusing to save into {run_dir}: its 'processor' is a symbolic link (to "
                f"{os.readlink(processor)}); adrank does not write through links in a run "
                "directory: remove it or choose another directory"
            )
        # a folder without adrank's marker is adopted only when it is a finished run of an
        # adrank version from before the markers; a user's own config.yaml or processor/
        # folder is never written into
        run_dir = claim_dir(run_dir, "run", legacy_entries=legacy_run_entries(run_dir))
        held = [name for name in RUN_FILES if (run_dir / name).is_file()]
        trained = [name for name in TRAINING_FILES if name in held]
        if trained and not overwrite:  # an `adrank train` run, not an earlier save
            raise OutputDirError(
                f"{run_dir} holds a training run ({', '.join(trained)}); pass overwrite=True "
                "to replace it, or save into another directory"
            )
        if held:
            park_run(run_dir)
        try:
            with tempfile.TemporaryDirectory(prefix="adrank-processor-") as tmp:
                self.processor_.save(Path(tmp) / "processor")
                path = write_artifact(
                    run_dir,
                    config=self.config_,
                    processor_dir=Path(tmp) / "processor",
                    feature_map=self.feature_map_,
                    model=self.model_,
                    metrics={"valid": self.best_valid_, "test": None},
                )
        except BaseException as exc:
            settle_replaced(run_dir, exc)
            raise
        discard_replaced(run_dir)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> CTRClassifier:
        """A fitted classifier from a run directory of one binary output (written by
        :meth:`save`, or by ``adrank train`` on single-task data). A missing, unfinished
        or damaged directory is an :class:`~adrank.artifact.ArtifactError`."""
        import json

        from adrank.artifact import ArtifactError, load_artifact
        from adrank.config import ConfigError

        for name in ("feature_map.json", "metrics.json", "processor/processor.json"):
            path = Path(run_dir) / name
            try:
                text = path.read_text() if path.is_file() else None
                if text is not None and not isinstance(json.loads(text), dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{path} is damaged: {exc}") from exc
        try:
            artifact = load_artifact(run_dir)
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise ArtifactError(
                f"{run_dir} cannot be loaded: a file is damaged ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]})"
            ) from exc
        schema = artifact.processor.schema
        if len(schema.labels) != 1 or getattr(artifact.model, "outputs", None):
            raise ArtifactError(
                f"{run_dir} is not a run of one binary output (labels {list(schema.labels)}): "
                "load it with adrank.serve.Predictor"
            )
        config = artifact.config
        clf = cls(
            model=config.model,
            params=dict(config.params),
            train=config.train,
            schema=schema,
            random_state=config.train.seed,
        )
        clf.schema_ = schema
        clf.processor_ = artifact.processor
        clf.feature_map_ = artifact.feature_map
        clf.label_ = schema.labels[0]
        clf.model_ = artifact.model
        clf.position_ = None
        clf.history_ = []
        clf.best_valid_ = (artifact.metrics or {}).get("valid")
        clf.config_ = config
        clf.classes_ = np.array([0, 1])
        return clf
