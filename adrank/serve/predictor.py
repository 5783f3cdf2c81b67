"""Predictor: score raw records with exactly the features the model was trained on.

``Predictor.load(run_dir)`` loads the artifact. :meth:`Predictor.predict_outputs` accepts a
list of dicts, a Polars or pandas DataFrame, or an Arrow table, runs the run's
FeatureProcessor and the model, and returns every output by name as float64 arrays (N,):
the model's own outputs (``Predictor.model_outputs``: ``pctr``; ``pctr`` and ``pcvr`` for
ESMM; a task's name outside the click/conversion funnel) plus the ones they imply
(:func:`adrank.tasks.derive_probabilities`: ``pctcvr = pctr × pcvr``, ``pcvr = pctcvr /
pctr``). :meth:`Predictor.predict` returns the model's outputs as one array: (N,) for a
single-output model (its probability, as before), (N, K) in ``model_outputs`` order.

Every probability goes through, in order:

1. the sigmoid of the model's logit (regression outputs are returned raw, untouched by the
   next steps);
2. the negative down-sampling correction of the sampled output, when the run was trained
   with ``train.negative_sampling_rate < 1`` (:mod:`adrank.train.sampling`);
3. the run's calibration map of that output, if it has one (``adrank calibrate``);
4. derivation of the outputs the model does not emit, from the calibrated ones (so
   ``pctcvr`` always equals ``pctr × pcvr`` exactly).

Field rules for raw input (the *fields* are the raw columns the schema's features read,
and the inputs of its declared transforms in place of the columns they derive: a Criteo
model reads the raw integers ``I1..I13`` and buckets them itself, an Avazu model reads the
raw ``hour`` and derives ``hour_of_day`` and ``weekday``, exactly as in training):

* **required**: every categorical field and every transform input. It has no default, so a
  missing key is an error naming the field (a misspelt or forgotten field must not silently
  become OOV). Send an explicit ``null`` for a value that is genuinely unknown: it maps to
  OOV (or the transform's missing value), as in training. Fields listed in
  ``optional_fields`` are exempted.
* **optional**: numeric fields (missing -> the schema's ``fill_value``) and sequence fields
  (missing -> empty sequence). A file scored by :func:`predict_file` must still hold every
  numeric field's column, and its numeric values are checked as ``adrank prepare`` checks
  them (see :mod:`adrank.serve.files`).
* **unknown keys** in a record (not a feature field, a label, or a role column such as the
  group, the time or a pass-through column) are rejected with an error listing them, unless
  ``allow_unknown=True``. Role and label columns are accepted and never reach the model;
  pass-through columns (``roles.passthrough``, e.g. a request id) are copied to the output
  of :func:`predict_file`. A column a transform derives (``hour_of_day``) is not a field:
  it is computed from its inputs, so a record sending it is refused. DataFrames and Arrow
  tables may carry extra columns (ids, labels, derived columns, which are recomputed): only
  missing required columns are errors.
* **types** in records: categorical values (and the inputs of text transforms) are strings
  or integers; numeric values (and the inputs of ``log_square_bucket``) are numbers or
  numeric strings; sequences are a delimited string or a list of strings/integers (an item
  holding the delimiter is an error: joined, it would become several ids).
  Booleans, floats for categorical fields, and nested objects are errors naming the field.
  Unseen categorical values map to OOV.

Backends: ``"torch"`` (eager, default), ``"torchscript"`` or ``"onnx"`` (onnxruntime, an
optional extra) run the files written by :func:`adrank.serve.export.export` and need it to
have been run on the artifact first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from adrank.artifact import Artifact, ArtifactError, artifact_digest, load_artifact
from adrank.config import SCORE_BATCH_SIZE
from adrank.data.batches import table_to_batch
from adrank.data.histories import list_item_problem
from adrank.data.processor import history_text
from adrank.data.schema import (
    NUM_RESERVED_IDS,
    OOV_ID,
    CategoricalFeature,
    NumericFeature,
    SequenceFeature,
)
from adrank.data.transforms import TransformError, apply_transforms, raw_inputs
from adrank.serve.history import score_rows
from adrank.tasks import TaskError, derive_probabilities, model_outputs
from adrank.train.sampling import correct_probabilities, sampled_output

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("torch", "torchscript", "onnx")
#: Record batches up to this size are encoded with per-field dict lookups (no DataFrame);
#: larger ones go through the processor's vectorized transform. Both give identical ids.
FAST_PATH_MAX_RECORDS = 2048
#: Vocabularies larger than this are not copied into Python dicts for the fast path.
FAST_PATH_MAX_VOCAB = 2_000_000


class RecordError(ValueError):
    """A raw record (or input column) is missing a required field, has an unknown field, or
    a value of the wrong type. ``index`` is the record's position (None for a whole column),
    ``field`` the offending raw field name."""

    def __init__(self, message: str, *, field: str, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index


def _kind_of(feature: Any) -> str:
    if isinstance(feature, NumericFeature):  # bucketized or not, the raw value is a number
        return "numeric"
    if isinstance(feature, SequenceFeature):
        return "sequence"
    return "categorical"


#: Value types accepted per field kind without further checks (exact types: bool is excluded).
_PLAIN_TYPES: dict[str, frozenset[type]] = {
    "categorical": frozenset({str, int}),
    "numeric": frozenset({int, float}),
    "sequence": frozenset({str}),
}


def _check_value(kind: str, value: Any) -> str | None:
    """None if ``value`` (not None) is acceptable for a field of ``kind``, else a reason."""
    if isinstance(value, bool):
        return "got a boolean"
    if kind == "categorical":
        if isinstance(value, (str, int)):
            return None
        return f"expected a string or integer, got {type(value).__name__} {value!r}"
    if kind == "numeric":
        if isinstance(value, (int, float)):
            return None
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return f"expected a number, got {value!r}"
            return None
        return f"expected a number, got {type(value).__name__} {value!r}"
    if isinstance(value, str):
        return None
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            return None
        return "expected a list of strings or integers"
    return f"expected a delimited string or a list, got {type(value).__name__}"


def run_outputs(artifact: Artifact) -> list[str]:
    """The names of a run's logit columns (:func:`adrank.tasks.model_outputs`).

    A format-v1 run of a single-task model on a multi-label dataset was trained on the first
    label (format v1 had no task choice); it is read that way, with a warning."""
    task = artifact.config.train.task
    try:
        return model_outputs(artifact.model, artifact.feature_map, task)
    except TaskError:
        if artifact.manifest.get("format_version") != 1:
            raise
        first = artifact.feature_map.tasks[0]
        logger.warning(
            "%s: a format-v1 single-task run on labels %s; reading its output as task %r "
            "(the first label, which v1 trained on)",
            artifact.directory,
            list(artifact.feature_map.labels),
            first.name,
        )
        return [first.output]


class Predictor:
    """In-process scorer over a loaded :class:`Artifact` (thread-safe for concurrent
    ``predict`` calls: the model runs in inference mode and is never mutated)."""

    def __init__(
        self,
        artifact: Artifact,
        batch_size: int = SCORE_BATCH_SIZE,
        *,
        backend: str = "torch",
        optional_fields: Iterable[str] = (),
        allow_unknown: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        stream = artifact.manifest.get("stream") or {}
        if stream.get("servable") is False:  # no train/serve skew: refuse, don't guess
            raise ArtifactError(
                f"{artifact.directory}: this run directory holds one part of a "
                f"{stream.get('strategy')!r} stream model (its scores also need parts a run "
                "directory does not hold), so serving it would not give the scores the "
                "stream measured; serve a full_retrain, sliding_window, fine_tune or "
                "confidence_ranking stream run, or a run from adrank train"
            )
        self.artifact = artifact
        self.batch_size = batch_size
        self.backend = backend
        self.allow_unknown = allow_unknown
        self.model = artifact.model.eval()
        self.processor = artifact.processor
        self.feature_map = artifact.feature_map
        schema = self.processor.schema
        #: columns computed by the schema's transforms (never sent: derived from inputs)
        self.derived: frozenset[str] = frozenset(t.name for t in schema.transforms)
        self.field_kinds: dict[str, str] = {}
        self.delimiters: dict[str, str] = {}
        for f in schema.features:
            src = f.source or f.name
            if src in self.derived:
                continue
            # a raw column read by several features is checked as the strictest kind
            if self.field_kinds.get(src) != "categorical":
                self.field_kinds[src] = _kind_of(f)
            if isinstance(f, SequenceFeature):
                self.delimiters[src] = f.delimiter
        transform_inputs = raw_inputs(schema.transforms)
        for src, kind in transform_inputs.items():
            if self.field_kinds.get(src) != "categorical":
                self.field_kinds[src] = kind
        optional = set(optional_fields)
        unknown_optional = sorted(optional - set(self.field_kinds))
        if unknown_optional:
            raise ValueError(
                f"optional_fields {unknown_optional} are not fields of this model; "
                f"fields: {sorted(self.field_kinds)}"
            )
        required = [
            src
            for src, f in ((f.source or f.name, f) for f in schema.features)
            if isinstance(f, CategoricalFeature) and src not in self.derived
        ]
        required += list(transform_inputs)
        self._transform_inputs = frozenset(transform_inputs)
        self.required_fields: tuple[str, ...] = tuple(
            src for src in dict.fromkeys(required) if src not in optional
        )
        self.allowed_fields: frozenset[str] = frozenset(
            [*self.field_kinds, *schema.labels, *schema.role_columns()]
        )
        #: raw pass-through columns (``roles.passthrough``): copied to prediction output
        self.passthrough: tuple[str, ...] = tuple(self.processor.passthrough_columns())
        self._init_outputs(artifact)
        self.version = f"{artifact.manifest.get('model')}-" + artifact_digest(
            artifact.directory, artifact.manifest
        )
        self._score = self._make_scorer(backend)
        self._lookups = self._build_lookups()

    def _init_outputs(self, artifact: Artifact) -> None:
        #: the model's logit columns, in order
        self.model_outputs: list[str] = run_outputs(artifact)
        rate = float(artifact.config.train.negative_sampling_rate)
        self.negative_sampling_rate = rate
        self._sampled = sampled_output(self.model_outputs) if rate < 1.0 else None
        self._regression = {
            t.output for t in self.feature_map.tasks if t.type == "regression"
        } & set(self.model_outputs)
        self.calibration: dict[str, Any] | None = None
        if artifact.calibration:
            from adrank.serve.calibration import output_calibration

            self.calibration = output_calibration(
                artifact.calibration, self.model_outputs, self.feature_map
            )
        empty = {name: np.zeros(0) for name in self.model_outputs}
        #: every output :meth:`predict_outputs` returns: the model's, then derived ones
        self.outputs: list[str] = list(derive_probabilities(empty))

    def _build_lookups(self) -> dict[str, dict[str, int]]:
        """value -> id dicts for vocabulary-encoded categorical features (the fast path);
        ids follow the processor's rule: vocabulary order from 2, anything else OOV."""
        lookups: dict[str, dict[str, int]] = {}
        tables: dict[str, dict[str, int]] = {}
        for f in self.processor.schema.features:
            if not isinstance(f, CategoricalFeature) or f.hash_buckets:
                continue
            table = f.share_vocab_with or f.name
            vocab = self.processor.vocab_.get(table)
            if vocab is None or len(vocab) > FAST_PATH_MAX_VOCAB:
                continue
            if table not in tables:
                tables[table] = {v: i + NUM_RESERVED_IDS for i, v in enumerate(vocab)}
            lookups[f.name] = tables[table]
        return lookups

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str = "cpu",
        batch_size: int = SCORE_BATCH_SIZE,
        *,
        backend: str = "torch",
        optional_fields: Iterable[str] = (),
        allow_unknown: bool = False,
    ) -> Predictor:
        """Load a run directory (see the module docstring for the field rules)."""
        return cls(
            load_artifact(run_dir, device=device),
            batch_size=batch_size,
            backend=backend,
            optional_fields=optional_fields,
            allow_unknown=allow_unknown,
        )

    # ------------------------------------------------------------------ backends -----
    def _make_scorer(self, backend: str) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """A function: features (field -> tensor, B rows) -> float32 logits (B,) or (B, T)."""
        if backend == "torch":
            device = next(self.model.parameters()).device

            def score_torch(feats: dict[str, torch.Tensor]) -> torch.Tensor:
                # sequence models: each distinct history encoded once (serve/history.py)
                out = score_rows(self.model, {k: v.to(device) for k, v in feats.items()})
                return out.float().cpu()

            return score_torch
        from adrank.serve.export import EXPORT_FILES, load_exported

        path = self.artifact.directory / EXPORT_FILES[backend]
        # the manifest lists an export only if it was made from these weights (retraining
        # rewrites the manifest without it), so a stale file is never picked up
        if backend not in (self.artifact.manifest.get("exports") or {}) or not path.exists():
            raise ArtifactError(
                f"{path} not found: run `adrank export {self.artifact.directory} "
                f"--format {backend}` before loading with backend={backend!r}"
            )
        return load_exported(path, backend, self.feature_map.names)

    def read(
        self,
        path: str | Path,
        *,
        has_header: bool | str = "auto",
        column_names: list[str] | None = None,
        separator: str | None = None,
    ) -> pl.DataFrame:
        """Read a raw input file as :func:`read_records` does, a header being recognised by
        this model's required fields."""
        return read_records(
            Path(path),
            has_header=has_header,
            column_names=column_names,
            separator=separator,
            expected=self.required_fields,
        )

    # ------------------------------------------------------------------ encoding -----
    def check_records(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Validate raw records against the field rules; returns them with list-valued
        sequences joined by the schema delimiter. Raises :class:`RecordError`."""
        out: list[Mapping[str, Any]] = []
        kinds = list(self.field_kinds.items())
        required = frozenset(self.required_fields)
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise RecordError(
                    f"record {i} is a {type(record).__name__}, expected a dict of fields",
                    field="",
                    index=i,
                )
            keys = record.keys()
            if not self.allow_unknown and not keys <= self.allowed_fields:
                unknown = [k for k in record if k not in self.allowed_fields]
                derived = [k for k in unknown if k in self.derived]
                why = (
                    f" ({derived} are computed by the schema's transforms from their inputs; "
                    "send the raw inputs only)"
                    if derived
                    else ""
                )
                raise RecordError(
                    f"record {i}: unknown field(s) {unknown}{why}; the model reads "
                    f"{sorted(self.field_kinds)}",
                    field=str(unknown[0]),
                    index=i,
                )
            if not required <= keys:
                name = next(n for n in self.required_fields if n not in record)
                why = (
                    "an input of the schema's transforms, which read every input"
                    if name in self._transform_inputs
                    else "categorical fields have no default"
                )
                raise RecordError(
                    f"record {i}: required field {name!r} is missing ({why}; send null for "
                    "an unknown value)",
                    field=name,
                    index=i,
                )
            joined: dict[str, Any] | None = None
            for name, kind in kinds:
                value = record.get(name)
                if value is None or type(value) in _PLAIN_TYPES[kind]:
                    continue  # the common case, without the full check
                reason = _check_value(kind, value)
                if reason:
                    raise RecordError(
                        f"record {i}: field {name!r} ({kind}): {reason}", field=name, index=i
                    )
                if kind == "sequence" and isinstance(value, (list, tuple)):
                    delimiter = self.delimiters[name]
                    problem = list_item_problem(value, delimiter)
                    if problem is not None:  # joined, it would become several ids, or none
                        at, why = problem
                        raise RecordError(
                            f"record {i}: field {name!r} (sequence): item {at} "
                            f"({value[at]!r}) {why}; send each id as its own list item",
                            field=name,
                            index=i,
                        )
                    joined = dict(record) if joined is None else joined
                    joined[name] = delimiter.join(str(v) for v in value)
            out.append(record if joined is None else joined)
        return out

    def _frame(self, data: Any) -> pl.DataFrame:
        if isinstance(data, pl.DataFrame):
            frame = data
        elif isinstance(data, pa.Table):
            frame = pl.from_arrow(data)  # type: ignore[assignment]
        elif type(data).__module__.startswith("pandas"):
            frame = pl.from_pandas(data)
        else:
            raise TypeError(
                f"cannot score {type(data).__name__}: pass a list of dicts, a Polars/pandas "
                "DataFrame or an Arrow table"
            )
        missing = [c for c in self.required_fields if c not in frame.columns]
        if missing:
            raise RecordError(
                f"required column(s) {missing} are missing from the input; it has {frame.columns}",
                field=missing[0],
            )
        frame = self.join_histories(frame)
        absent = [c for c in self.field_kinds if c not in frame.columns]
        if absent:  # optional fields: null columns take the schema defaults
            frame = frame.with_columns(
                [
                    pl.lit(
                        None, dtype=pl.Float64 if self.field_kinds[c] == "numeric" else pl.Utf8
                    ).alias(c)
                    for c in absent
                ]
            )
        return frame

    def join_histories(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with every list-valued sequence column (a Parquet or JSON-lines
        history, a pandas column of lists) joined by the field's delimiter, as the record
        path joins a list; items must be strings or integers and hold no delimiter. A
        nested value (list, struct) in any other field's column is a :class:`RecordError`
        naming it (cast to text, it would be scored silently as an unseen value)."""
        joined: list[pl.Series] = []
        for name, dtype in frame.schema.items():
            kind = self.field_kinds.get(name)
            if kind is None or not dtype.is_nested():
                continue
            if kind != "sequence" or not isinstance(dtype, (pl.List, pl.Array)):
                expected = "a number" if kind == "numeric" else "a string or integer"
                raise RecordError(
                    f"column {name!r} ({kind}) holds nested values ({dtype}); expected {expected}",
                    field=name,
                )
            try:  # the processor's checked join, as prepare and fit read a list history
                joined.append(history_text(frame.get_column(name), self.delimiters[name]))
            except TransformError as exc:
                raise RecordError(str(exc), field=name, index=exc.row) from None
        return frame.with_columns(joined) if joined else frame

    def encode(self, data: Any) -> pl.DataFrame:
        """Raw records -> processed model inputs (labels not required)."""
        try:
            if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
                if not data:
                    raise ValueError("no records to score")
                records = self.check_records(data)
                return self.processor.transform_records(records)
            return self.processor.transform(self._frame(data), require_labels=False)
        except TransformError as exc:
            raise RecordError(str(exc), field=exc.column, index=exc.row) from exc

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Checked raw records -> model input tensors (field -> (N,) or (N, L)), without a
        DataFrame for vocabulary-encoded categorical fields (one dict lookup per value).
        The other features go through the processor's own column encoders. Gives exactly
        the ids/values of :meth:`encode` (tested)."""
        schema = self.processor.schema
        out: dict[str, torch.Tensor] = {}
        others = []
        for f in schema.features:
            lookup = self._lookups.get(f.name)
            src = f.source or f.name
            if lookup is None or src in self.derived:
                others.append(f)
                continue
            ids = [
                OOV_ID if (v := r.get(src)) is None else lookup.get(str(v), OOV_ID) for r in records
            ]
            out[f.name] = torch.tensor(ids, dtype=torch.int64)
        if others:
            out.update(self._encode_other(records, others))
        return out

    def _encode_other(
        self, records: Sequence[Mapping[str, Any]], features: list[Any]
    ) -> dict[str, torch.Tensor]:
        proc = self.processor
        transforms = proc.schema.transforms
        columns: dict[str, pl.Series] = {}
        for f in features:
            src = f.source or f.name
            if src in self.derived:
                continue
            values = [r.get(src) for r in records]
            if isinstance(f, NumericFeature):
                floats = [None if v is None or v == "" else float(v) for v in values]
                columns[src] = pl.Series(src, floats, dtype=pl.Float64)
            else:
                columns[src] = _strings(src, values)
        derived = any((f.source or f.name) in self.derived for f in features)
        if derived:  # their raw inputs as text (as FeatureProcessor.transform_records does)
            for c in raw_inputs(transforms):
                if c not in columns:
                    columns[c] = _strings(c, [r.get(c) for r in records])
        frame = pl.DataFrame(columns)
        if derived:
            try:
                frame = apply_transforms(frame, transforms)
            except TransformError as exc:
                raise RecordError(str(exc), field=exc.column, index=exc.row) from exc
        out: dict[str, torch.Tensor] = {}
        try:
            proc.check_aligned(frame)
            series_of = {f.name: proc.encode_feature(frame, f) for f in features}
        except TransformError as exc:  # unequal aligned histories, a non-finite number
            raise RecordError(str(exc), field=exc.column, index=exc.row) from exc
        for f in features:
            series = series_of[f.name]
            kind = self.feature_map.field(f.name).kind
            dtype = np.float32 if kind == "numeric" else np.int64
            # polars hands out read-only buffers; a copy is cheap at serving batch sizes
            out[f.name] = torch.from_numpy(np.array(series.to_numpy(), dtype=dtype))
        return out

    # ------------------------------------------------------------------- scoring -----
    @torch.inference_mode()
    def predict_logits(self, encoded: pl.DataFrame) -> torch.Tensor:
        """Processed inputs -> float32 logits (N,) or (N, T), uncalibrated."""
        out: list[torch.Tensor] = []
        for start in range(0, encoded.height, self.batch_size):
            chunk = encoded.slice(start, self.batch_size).to_arrow()
            batch = table_to_batch(chunk, self.feature_map)
            out.append(self._score(batch.features))
        return torch.cat(out)

    def outputs_from_logits(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        """Logits (N,) or (N, K) -> every output by name, float64 (N,) each: sigmoid,
        down-sampling correction, calibration, derivation (see the module docstring)."""
        columns = logits if logits.dim() == 2 else logits.reshape(len(logits), -1)
        if columns.shape[1] != len(self.model_outputs):
            raise ArtifactError(
                f"{self.artifact.directory}: the model gives {columns.shape[1]} output "
                f"column(s) but its outputs are {self.model_outputs}"
            )
        # one sigmoid over the whole (N, K) block, as the trainer computes its predictions
        # (a strided column can round differently in the vectorized kernel)
        squashed = torch.sigmoid(columns).double().numpy()
        probs: dict[str, np.ndarray] = {}
        for i, name in enumerate(self.model_outputs):
            if name in self._regression:
                probs[name] = columns[:, i].double().numpy()
                continue
            p = squashed[:, i]
            if name == self._sampled:
                p = correct_probabilities(p, self.negative_sampling_rate)
            probs[name] = p
        if self.calibration:
            from adrank.serve.calibration import calibrate_outputs

            probs = calibrate_outputs(self.calibration, probs)
        return derive_probabilities(probs)

    def stack(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's own outputs as one array: (N,) for one output, else (N, K)."""
        if len(self.model_outputs) == 1:
            return outputs[self.model_outputs[0]]
        return np.stack([outputs[name] for name in self.model_outputs], axis=1)

    def predict_encoded(self, encoded: pl.DataFrame) -> np.ndarray:
        """Processed inputs -> the model's outputs (N,) or (N, K), as :meth:`predict`."""
        return self.stack(self.outputs_from_logits(self.predict_logits(encoded)))

    def predict_outputs(self, data: Any) -> dict[str, np.ndarray]:
        """Every output (``self.outputs``) by name for raw records, float64 (N,) each."""
        is_records = isinstance(data, Sequence) and not isinstance(data, (str, bytes))
        if not is_records:
            data = self._frame(data)  # a Polars frame: checking it again is cheap
        if len(data) == 0:  # no rows: no scores (N = 0), every output present
            return self.outputs_from_logits(torch.zeros(0, len(self.model_outputs)))
        if is_records and len(data) <= FAST_PATH_MAX_RECORDS:
            from adrank.serve.columnar import PairRecords, encode_pairs

            features = encode_pairs(self, data) if isinstance(data, PairRecords) else None
            if features is None:
                features = self.encode_records(self.check_records(data))
            with torch.inference_mode():
                logits = self._score(features)
        else:
            logits = self.predict_logits(self.encode(data))
        return self.outputs_from_logits(logits)

    def predict(self, data: Any) -> np.ndarray:
        """The model's outputs for raw records: (N,) for a single-output model (pCTR for a
        click model), else (N, K) in ``model_outputs`` order. Derived outputs:
        :meth:`predict_outputs`."""
        return self.stack(self.predict_outputs(data))


def _strings(name: str, values: Sequence[Any]) -> pl.Series:
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.Utf8)


# the file entry points live in serve/files.py (they need Predictor, defined above)
from adrank.serve.files import (  # noqa: E402, F401  (re-exported)
    OutputExistsError,
    check_output_path,
    predict_file,
    read_records,
)
