"""FeatureProcessor: fit vocabularies and normalizers on the training split, then transform
splits and single serving records identically.

Fitted state follows scikit-learn conventions (trailing underscore). ``save`` writes a
directory with a format version: ``processor.json`` (schema, statistics, bucket boundaries)
and one Arrow IPC file per vocabulary. No pickled code.

Encoding rules (ids: 0 = padding, 1 = OOV, values from 2):

* categorical: values seen at least ``min_count`` times in training get ids ordered by
  descending frequency (ties by value); unseen/rare/missing values map to OOV. With
  ``hash_buckets`` the id is ``crc32(value) % buckets + 2`` (stable across versions and
  processes), missing values map to OOV.
* numeric: missing/NaN/inf take ``fill_value``; then ``standard`` = (x - mean) / std,
  ``minmax`` = (x - min) / (max - min), ``log1p`` = sign(x)·log1p(|x|). With ``buckets``
  the (unfilled) value is quantile-bucketized into a categorical id; missing -> OOV.
* sequence: split on the delimiter, map items through the (shared) vocabulary, keep the
  last ``max_len`` items, pad with 0 on the configured side.
* pretrained: the ids of its id feature (``share_vocab_with``); the vectors are aligned to
  that vocabulary at fit (:mod:`adrank.data.pretrained`) and saved as ``vectors_<name>.npy``.
  A sequence sharing a pretrained feature's vocabulary uses the id feature's vocabulary.

The stateless rules live in :mod:`adrank.data.numeric`, :mod:`adrank.data.histories` and
:mod:`adrank.data.roles_encoding`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo, TaskInfo
from adrank.data.histories import check_aligned, history_items, history_text, item_counts, pad_items
from adrank.data.numeric import encode_numeric, fit_numeric, numeric_series, numeric_values
from adrank.data.pretrained import align_vectors, load_table, read_vectors, save_table
from adrank.data.readers_base import category_text
from adrank.data.roles_encoding import GROUP_COLUMN, encode_role, fit_role_vocab, role_column
from adrank.data.schema import (
    NUM_RESERVED_IDS,
    OOV_ID,
    ROLES,
    CategoricalFeature,
    Feature,
    NumericFeature,
    PretrainedFeature,
    Schema,
    SchemaError,
    SequenceFeature,
    infer_outputs,
)
from adrank.data.transforms import apply_transforms
from adrank.utils import atomic_write, atomic_write_text

__all__ = [
    "GROUP_COLUMN",
    "PROCESSOR_FORMAT_VERSION",
    "READABLE_PROCESSOR_VERSIONS",
    "FeatureProcessor",
    "NotFittedError",
    "history_text",
    "role_column",
    "stable_hash_ids",
]

logger = logging.getLogger(__name__)

PROCESSOR_FORMAT_VERSION = 2
#: processors saved by these versions load (v1: no roles besides group, no role vocabularies)
READABLE_PROCESSOR_VERSIONS = (1, 2)


class NotFittedError(RuntimeError):
    """The processor was used before ``fit`` or ``load``."""


def _table_of(feature: CategoricalFeature | SequenceFeature) -> str:
    return feature.share_vocab_with or feature.name


def stable_hash_ids(values: pl.Series, buckets: int) -> pl.Series:
    """crc32-based bucket ids (2..buckets+1) for a string Series; nulls -> OOV.

    Only distinct values are hashed in Python, so cost scales with cardinality, not rows.
    """
    uniques = values.drop_nulls().unique()
    codes = [zlib.crc32(v.encode()) % buckets + NUM_RESERVED_IDS for v in uniques.to_list()]
    return values.replace_strict(
        uniques, pl.Series(codes, dtype=pl.Int64), default=OOV_ID, return_dtype=pl.Int64
    )


class FeatureProcessor:
    """Fit on training data, transform anything with the same columns.

    Args:
        schema: the dataset schema.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    # ------------------------------------------------------------------ fitting ------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "vocab_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("FeatureProcessor is not fitted; call fit() or load() first")

    def _vocab_table(self, f: CategoricalFeature | SequenceFeature) -> str:
        """The table whose vocabulary encodes ``f``; a pretrained feature (and a sequence
        sharing it) is encoded with its id feature's vocabulary."""
        table = _table_of(f)
        owner = self.schema.feature(table) if table != f.name else f
        return _table_of(owner) if isinstance(owner, PretrainedFeature) else table

    def _counted(self, f: Feature) -> bool:
        """Whether ``f``'s values count towards a vocabulary (pretrained vectors and their
        histories are counted once, by the id feature and its history)."""
        if isinstance(f, (NumericFeature, PretrainedFeature)) or getattr(f, "hash_buckets", None):
            return False
        return self._vocab_table(f) == _table_of(f)  # type: ignore[arg-type]

    def fit(
        self, frame: pl.DataFrame, vectors: Mapping[str, pl.DataFrame] | None = None
    ) -> FeatureProcessor:
        """Fit vocabularies, numeric statistics and bucket boundaries on ``frame``, and align
        the vectors of pretrained features (``vectors``: feature name -> a table with its id
        and vector columns; a feature not in it reads its schema's ``vectors`` file)."""
        self.schema.check_columns(frame.columns, where="the training data")
        if frame.height == 0:
            raise ValueError("cannot fit a FeatureProcessor on an empty training split")
        frame = apply_transforms(frame, self.schema.transforms)
        vocab: dict[str, list[str]] = {}
        numeric_stats: dict[str, dict[str, float]] = {}
        boundaries: dict[str, list[float]] = {}

        min_counts = self.min_counts()
        for table, merged in self._count_values(frame).items():
            merged = merged.filter(pl.col("count") >= min_counts[table]).sort(
                ["count", "value"], descending=[True, False]
            )
            vocab[table] = merged["value"].to_list()

        for f in self.schema.features:
            if not isinstance(f, NumericFeature):
                continue
            stats, bounds = fit_numeric(numeric_values(self._source(frame, f), f), f)
            if bounds is not None:
                boundaries[f.name] = bounds
            numeric_stats[f.name] = stats

        self.role_vocab_ = {
            role: fit_role_vocab(frame.get_column(col))
            for role, col in self.schema.roles.items()
            if ROLES[role].kind == "vocab"
        }
        self.vocab_ = vocab
        given = dict(vectors or {})
        pretrained = [f.name for f in self.schema.features if isinstance(f, PretrainedFeature)]
        if set(given) - set(pretrained):
            raise SchemaError(
                f"vectors were given for {sorted(set(given) - set(pretrained))}, which are no "
                f"pretrained features of the schema (pretrained: {pretrained})"
            )
        self.vectors_ = {
            f.name: align_vectors(
                given[f.name] if f.name in given else read_vectors(f),
                f,
                vocab.get(self._vocab_table(f), []),
            )
            for f in self.schema.features
            if isinstance(f, PretrainedFeature)
        }
        self.numeric_stats_ = numeric_stats
        self.boundaries_ = boundaries
        self._build_lookups()
        logger.info(
            "fitted FeatureProcessor on %d rows: %s",
            frame.height,
            ", ".join(f"{t}={len(v) + NUM_RESERVED_IDS}" for t, v in vocab.items()),
        )
        return self

    def min_counts(self) -> dict[str, int]:
        """``min_count`` of every vocabulary table (not hashed, not numeric)."""
        out: dict[str, int] = {}
        for f in self.schema.features:
            if not self._counted(f):
                continue
            out[_table_of(f)] = getattr(self.schema.feature(_table_of(f)), "min_count", 1)
        return out

    def _count_values(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Per vocabulary table, a frame ``value`` (str), ``count`` of the values in the
        (transformed) ``frame``; shared vocabularies pool the counts of all their users."""
        counts: dict[str, list[pl.DataFrame]] = {}
        for f in self.schema.features:
            if not self._counted(f):
                continue
            if isinstance(f, SequenceFeature):
                col = history_text(self._source(frame, f), f.delimiter)
                col = col.str.split(f.delimiter).explode()
            else:
                col = category_text(self._source(frame, f))
            col = col.filter(col.is_not_null() & (col != ""))
            counts.setdefault(_table_of(f), []).append(
                col.rename("value").value_counts(name="count")
            )
        return {
            table: pl.concat(parts).group_by("value").agg(pl.col("count").sum())
            for table, parts in counts.items()
        }

    def value_counts(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Per vocabulary table, how often each value occurs in the raw ``frame`` (columns
        ``value``, ``count``): what ``fit`` counts, used to grow vocabularies over a stream
        (:mod:`adrank.stream.vocab`)."""
        self.schema.check_columns(frame.columns, where="the counted data")
        return self._count_values(apply_transforms(frame, self.schema.transforms))

    def set_vocabulary(self, table: str, values: list[str]) -> None:
        """Replace the vocabulary of ``table`` (id ``i + 2`` is ``values[i]``). Growing it
        by appending keeps every existing id; see :mod:`adrank.stream.vocab`."""
        self._check_fitted()
        if table not in self.vocab_:
            raise KeyError(f"no vocabulary table {table!r}; tables: {sorted(self.vocab_)}")
        self.vocab_[table] = list(values)
        self._build_lookups()

    def _build_lookups(self) -> None:
        self._lookup_keys = {t: pl.Series(v, dtype=pl.Utf8) for t, v in self.vocab_.items()}
        self._lookup_ids = {
            t: pl.Series(np.arange(NUM_RESERVED_IDS, len(v) + NUM_RESERVED_IDS), dtype=pl.Int64)
            for t, v in self.vocab_.items()
        }

    # ------------------------------------------------------------------ helpers ------
    @staticmethod
    def _source(frame: pl.DataFrame, f: Any) -> pl.Series:
        return frame.get_column(f.source or f.name)

    def _encode_categorical(self, col: pl.Series, f: CategoricalFeature) -> pl.Series:
        col = category_text(col)
        if f.hash_buckets:
            return stable_hash_ids(col, f.hash_buckets)
        table = self._vocab_table(f)
        return col.replace_strict(
            self._lookup_keys[table],
            self._lookup_ids[table],
            default=OOV_ID,
            return_dtype=pl.Int64,
        )

    def _encode_numeric(self, frame: pl.DataFrame, f: NumericFeature) -> pl.Series:
        bounds = self.boundaries_[f.name] if f.buckets else None
        x = numeric_values(self._source(frame, f), f)
        return encode_numeric(x, f, self.numeric_stats_[f.name], bounds)

    def check_aligned(self, frame: pl.DataFrame) -> None:
        """Refuse rows whose aligned histories (``aligned_with``: one attribute per event of
        another history) hold different numbers of items: the attributes would be paired with
        the wrong events (a null or empty history has none). Pairs the frame does not hold
        both of are not checked here. Raises
        :class:`~adrank.data.transforms.TransformError` naming the column and the row."""
        check_aligned(self.schema, frame)

    def _encode_sequence(self, col: pl.Series, f: SequenceFeature) -> pl.Series:
        lists = history_items(col, f.delimiter)
        flat = lists.explode(empty_as_null=False, keep_nulls=False)
        table = self._vocab_table(f)
        owner = self.schema.feature(table)
        if getattr(owner, "hash_buckets", None):
            ids = stable_hash_ids(flat, owner.hash_buckets)  # type: ignore[arg-type]
        else:
            ids = flat.replace_strict(
                self._lookup_keys[table],
                self._lookup_ids[table],
                default=OOV_ID,
                return_dtype=pl.Int64,
            )
        out = pad_items(ids.to_numpy(), item_counts(lists), f.max_len, f.padding)
        return pl.Series(f.name, out, dtype=pl.Array(pl.Int64, f.max_len))

    # ---------------------------------------------------------------- transform ------
    def transform(self, frame: pl.DataFrame, require_labels: bool = True) -> pl.DataFrame:
        """Encode a raw frame into model inputs (one column per feature, labels as float32,
        one column per role, see :func:`role_column`).

        Feature columns missing from ``frame`` raise :class:`SchemaError` naming them. With
        ``require_labels=False`` (serving) label and role columns may be absent.
        """
        self._check_fitted()
        derived = {t.name for t in self.schema.transforms}
        needed = [f.source or f.name for f in self.schema.features]
        needed = [c for c in needed if c not in derived]
        needed += [c for t in self.schema.transforms for c in t.inputs if c not in derived]
        if require_labels:
            needed += list(self.schema.labels) + self.schema.role_columns()
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise SchemaError(
                f"columns {missing} are missing from the input; available: {frame.columns}"
            )
        frame = apply_transforms(frame, self.schema.transforms)
        self.check_aligned(frame)
        out: dict[str, pl.Series] = {}
        for label in self.schema.labels:
            if label in frame.columns:
                out[label] = self._label_values(frame.get_column(label))
        self._check_given(out)
        for f in self.schema.features:
            out[f.name] = self.encode_feature(frame, f)
        for role, value in self.schema.roles.items():
            for source in value if isinstance(value, tuple) else (value,):
                if source in frame.columns:
                    column = role_column(role, source)
                    out[column] = self._encode_role(role, frame.get_column(source)).rename(column)
        return pl.DataFrame(out)

    def _label_values(self, raw: pl.Series) -> pl.Series:
        """A label column as float32, checked: a binary task's label must be 0 or 1, a
        regression task's a finite number (a ``given``-only column is checked by
        :meth:`_check_given`); a bad or missing value raises naming the column, the value and
        the (0-based) row."""
        name = raw.name
        task = next((t for t in self.schema.tasks if t.label == name), None)
        if raw.dtype == pl.Utf8:
            value = raw.str.strip_chars().cast(pl.Float64, strict=False)
        elif raw.dtype.is_numeric() or raw.dtype in (pl.Boolean, pl.Null):
            value = raw.cast(pl.Float64)
        else:
            raise SchemaError(f"label column {name!r} has dtype {raw.dtype}, expected numbers")
        if task is None:
            bad, rule = raw.is_not_null() & value.is_null(), "a binary 0/1 label"
        elif task.type == "binary":
            bad, rule = ~value.is_in([0.0, 1.0]).fill_null(False), "a binary 0/1 label"
        else:
            bad, rule = ~value.is_finite().fill_null(False), "a finite number"
        if bad.any():
            row = int(bad.arg_max())  # type: ignore[arg-type]
            raise SchemaError(
                f"label column {name!r} must hold {rule}; found {raw[row]!r} in row {row} "
                f"({int(bad.sum())} bad row(s) in total)"
            )
        return value.cast(pl.Float32).rename(name)

    def _check_given(self, labels: dict[str, pl.Series]) -> None:
        """A ``given`` label must be 0/1: name the task, the column, the value and the row."""
        for task in self.schema.tasks:
            col = labels.get(task.given) if task.given else None
            if col is None:
                continue
            bad = ~(col.is_in([0.0, 1.0]).fill_null(False))
            if bad.any():
                row = int(bad.arg_max())  # type: ignore[arg-type]
                raise SchemaError(
                    f"task {task.name!r} is given {task.given!r}, which must be a binary 0/1 "
                    f"label; found {col[row]!r} in row {row}"
                )

    def _encode_role(self, role: str, col: pl.Series) -> pl.Series:
        return encode_role(role, col, self.role_vocab_.get(role, []))

    def encode_feature(self, frame: pl.DataFrame, feature: Feature) -> pl.Series:
        """Encode one schema feature of a raw ``frame`` (a Series named after the feature):
        int64 ids for categorical/bucketized, float32 for numeric, int64 arrays for
        sequences."""
        self._check_fitted()
        if isinstance(feature, CategoricalFeature):
            return self._encode_categorical(self._source(frame, feature), feature).rename(
                feature.name
            )
        if isinstance(feature, NumericFeature):
            return self._encode_numeric(frame, feature)
        return self._encode_sequence(self._source(frame, feature), feature)

    def fit_transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        return self.fit(frame).transform(frame)

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        """Encode serving records (dicts of raw values). Missing numeric fields take their fill
        value and missing categorical/sequence fields map to OOV/empty; labels are optional."""
        self._check_fitted()
        if not records:
            raise ValueError("no records to transform")
        columns: dict[str, pl.Series] = {}
        derived = {t.name for t in self.schema.transforms}
        for f in self.schema.features:
            src = f.source or f.name
            if src in derived:
                continue
            values = [r.get(src) for r in records]
            if isinstance(f, NumericFeature):
                columns[src] = numeric_series(src, values)
            else:
                columns[src] = _text_series(src, values)
        for t in self.schema.transforms:
            for src in t.inputs:
                if src not in columns and (src not in derived or src == t.name):
                    columns[src] = _text_series(src, [r.get(src) for r in records])
        return self.transform(pl.DataFrame(columns), require_labels=False)

    # ------------------------------------------------------------------ outputs ------
    def vocab_size(self, table: str) -> int:
        owner = self.schema.feature(table)
        if isinstance(owner, PretrainedFeature):
            owner = self.schema.feature(self._vocab_table(owner))
            table = owner.name
        buckets = getattr(owner, "hash_buckets", None)
        if buckets:
            return buckets + NUM_RESERVED_IDS
        return len(self.vocab_.get(table, [])) + NUM_RESERVED_IDS

    def feature_map(self) -> FeatureMap:
        """The model-facing description of the transformed columns."""
        self._check_fitted()
        fields: list[FieldInfo] = []
        for f in self.schema.features:
            if isinstance(f, NumericFeature):
                if f.buckets:
                    size = len(self.boundaries_[f.name]) + 1 + NUM_RESERVED_IDS
                    fields.append(
                        FieldInfo(f.name, "categorical", size, 0, f.name, f.embedding_dim)
                    )
                else:
                    fields.append(FieldInfo(f.name, "numeric", 0, 0, f.name, f.embedding_dim))
            elif isinstance(f, CategoricalFeature):
                t = f.name if isinstance(f, PretrainedFeature) else _table_of(f)
                fields.append(
                    FieldInfo(f.name, "categorical", self.vocab_size(t), 0, t, f.embedding_dim)
                )
            else:
                t = _table_of(f)
                fields.append(
                    FieldInfo(f.name, "sequence", self.vocab_size(t), f.max_len, t, f.embedding_dim)
                )
        vectors = getattr(self, "vectors_", {})
        for i, f in enumerate(self.schema.features):
            if isinstance(f, PretrainedFeature):
                dim = int(vectors[f.name].shape[1])
                fields[i] = dataclasses.replace(fields[i], vectors_dim=dim, freeze=f.freeze)
        for f, info in zip(self.schema.features, fields, strict=True):
            if isinstance(f, SequenceFeature) and (f.target or f.aligned_with):
                i = fields.index(info)
                fields[i] = dataclasses.replace(info, target=f.target, aligned_with=f.aligned_with)
        tasks = tuple(
            TaskInfo(t.name, t.label, t.type, float(t.weight), t.given, output)
            for t, output in zip(self.schema.tasks, infer_outputs(self.schema.tasks), strict=True)
        )
        roles: dict[str, RoleInfo] = {}
        for role, value in self.schema.roles.items():
            if role == "passthrough":
                continue  # text, never a model input: see passthrough_columns()
            values = tuple(getattr(self, "role_vocab_", {}).get(role, ()))
            roles[role] = RoleInfo(role, role_column(role, value), ROLES[role].kind, value, values)
        return FeatureMap(
            fields=tuple(fields),
            labels=tuple(self.schema.labels),
            group=GROUP_COLUMN if self.schema.group else None,
            tasks=tasks,
            roles=roles,
            vectors=dict(vectors),
        )

    def passthrough_columns(self) -> dict[str, str]:
        """Raw passthrough column -> its processed column."""
        value = self.schema.roles.get("passthrough", ())
        return {c: role_column("passthrough", c) for c in value}

    # ---------------------------------------------------------------- save/load ------
    def save(self, directory: str | Path) -> None:
        """Write ``processor.json`` and ``vocab_<table>.arrow`` files (atomically each)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for table, values in self.vocab_.items():
            tbl = pa.table({"value": pa.array(values, type=pa.string())})

            def write(p: Path, tbl: pa.Table = tbl) -> None:
                with pa.OSFile(str(p), "wb") as sink, pa.ipc.new_file(sink, tbl.schema) as w:
                    w.write_table(tbl)

            atomic_write(directory / f"vocab_{table}.arrow", write)
        for name, table_values in self.vectors_.items():
            save_table(directory / f"vectors_{name}.npy", table_values)
        state = {
            "format_version": PROCESSOR_FORMAT_VERSION,
            "schema": self.schema.to_dict(),
            "tables": sorted(self.vocab_),
            "numeric_stats": self.numeric_stats_,
            "boundaries": self.boundaries_,
            "role_vocab": self.role_vocab_,
            "vectors": sorted(self.vectors_),
        }
        atomic_write_text(directory / "processor.json", json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FeatureProcessor:
        directory = Path(directory)
        path = directory / "processor.json"
        if not path.exists():
            raise FileNotFoundError(f"no processor.json in {directory}")
        state = json.loads(path.read_text())
        version = state.get("format_version")
        if version not in READABLE_PROCESSOR_VERSIONS:
            raise ValueError(
                f"{path}: processor format version {version!r} is not supported "
                f"(this adrank reads versions {list(READABLE_PROCESSOR_VERSIONS)})"
            )
        proc = cls(Schema.from_dict(state["schema"]))
        vocab: dict[str, list[str]] = {}
        for table in state["tables"]:
            vpath = directory / f"vocab_{table}.arrow"
            if not vpath.exists():
                raise FileNotFoundError(f"vocabulary file missing: {vpath}")
            with pa.memory_map(str(vpath)) as src:
                vocab[table] = pa.ipc.open_file(src).read_all().column("value").to_pylist()
        proc.vocab_ = vocab
        proc.numeric_stats_ = state["numeric_stats"]
        proc.boundaries_ = {k: list(v) for k, v in state["boundaries"].items()}
        proc.role_vocab_ = {k: list(v) for k, v in (state.get("role_vocab") or {}).items()}
        proc.vectors_ = {
            name: load_table(directory / f"vectors_{name}.npy", name)
            for name in state.get("vectors") or ()
        }
        proc._build_lookups()
        return proc


def _text_series(name: str, values: Iterable[Any]) -> pl.Series:
    return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.Utf8)
