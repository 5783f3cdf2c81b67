"""Declarative feature schema: labels, categorical, numeric and sequence columns.

A schema is loaded from YAML/JSON (or built in code) and validated on load. Unknown keys,
unknown feature types and bad values raise :class:`SchemaError` naming the offending key.

Example (YAML)::

    labels: [click]
    group: user_id          # optional, used for gAUC
    time: ts                # optional, time-ordered splits / incremental training
    features:
      - {name: user_id, type: categorical, min_count: 1}
      - {name: ad_id, type: categorical, hash_buckets: 100000}
      - {name: price, type: numeric, normalizer: log1p, fill_value: 0}
      - {name: age, type: numeric, buckets: 10}          # quantile-bucketized -> categorical
      - {name: hist, type: sequence, delimiter: "|", max_len: 20, share_vocab_with: ad_id}

Id convention for every vocabulary: ``0`` is padding, ``1`` is OOV (unseen, rare or missing),
real values start at ``2``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2

Normalizer = Literal["none", "standard", "minmax", "log1p"]
NORMALIZERS: tuple[str, ...] = ("none", "standard", "minmax", "log1p")


class SchemaError(ValueError):
    """Raised when a schema is malformed or does not match the data."""


@dataclass(frozen=True)
class CategoricalFeature:
    """A single-valued categorical column.

    Attributes:
        name: column name in the raw data.
        min_count: values seen fewer times than this in the training split map to OOV.
        hash_buckets: if set, values are hashed into this many buckets instead of a fitted
            vocabulary (bounded table size for huge vocabularies).
        share_vocab_with: name of another categorical/sequence feature whose vocabulary
            (and embedding table) this feature reuses.
        embedding_dim: optional per-feature embedding size (default: the model's).
        source: raw column to read (defaults to ``name``).
    """

    name: str
    min_count: int = 1
    hash_buckets: int | None = None
    share_vocab_with: str | None = None
    embedding_dim: int | None = None
    source: str | None = None
    type: Literal["categorical"] = "categorical"


@dataclass(frozen=True)
class NumericFeature:
    """A numeric column.

    Attributes:
        fill_value: value used for missing entries (before normalization).
        normalizer: ``none``, ``standard`` (z-score), ``minmax`` or ``log1p``.
        buckets: if set, quantile-bucketize into this many bins; the feature then becomes
            categorical (ids ``2..buckets+1``, missing -> OOV).
    """

    name: str
    fill_value: float = 0.0
    normalizer: Normalizer = "none"
    buckets: int | None = None
    embedding_dim: int | None = None
    source: str | None = None
    type: Literal["numeric"] = "numeric"


@dataclass(frozen=True)
class SequenceFeature:
    """A variable-length list of ids (e.g. a user's behaviour history), stored as a
    delimited string or a list column.

    Attributes:
        delimiter: separator for string-encoded sequences.
        max_len: sequences are truncated (keeping the most recent, i.e. last, items) and
            padded to this length.
        padding: ``left`` or ``right`` side padding.
        share_vocab_with: categorical feature whose vocabulary this sequence uses (the
            usual case: history of ``item_id`` shares the ``item_id`` vocabulary).
    """

    name: str
    max_len: int
    delimiter: str = "|"
    padding: Literal["left", "right"] = "left"
    share_vocab_with: str | None = None
    min_count: int = 1
    embedding_dim: int | None = None
    source: str | None = None
    type: Literal["sequence"] = "sequence"


Feature = CategoricalFeature | NumericFeature | SequenceFeature
_FEATURE_TYPES: dict[str, type] = {
    "categorical": CategoricalFeature,
    "numeric": NumericFeature,
    "sequence": SequenceFeature,
}


@dataclass(frozen=True)
class Schema:
    """The full declaration of a dataset's columns."""

    labels: tuple[str, ...]
    features: tuple[Feature, ...]
    group: str | None = None
    time: str | None = None
    name: str = "dataset"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    # ---- lookups -------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(f"schema has no feature named {name!r}; known: {self.feature_names}")

    def source_columns(self) -> list[str]:
        """Raw columns the schema reads (labels, features, group, time), without duplicates."""
        cols: list[str] = list(self.labels)
        cols += [f.source or f.name for f in self.features]
        for extra in (self.group, self.time):
            if extra:
                cols.append(extra)
        return list(dict.fromkeys(cols))

    def check_columns(self, available: list[str] | tuple[str, ...], where: str = "data") -> None:
        """Raise :class:`SchemaError` naming every schema column missing from ``available``."""
        missing = [c for c in self.source_columns() if c not in set(available)]
        if missing:
            raise SchemaError(
                f"columns {missing} declared in the schema are missing from {where}; "
                f"available columns: {list(available)}"
            )

    # ---- (de)serialization ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        feats = []
        for f in self.features:
            d = dataclasses.asdict(f)
            defaults = {fl.name: fl.default for fl in dataclasses.fields(f)}
            feats.append(
                {"name": d.pop("name"), "type": d.pop("type")}
                | {k: v for k, v in d.items() if v != defaults.get(k)}
            )
        out: dict[str, Any] = {"name": self.name, "labels": list(self.labels), "features": feats}
        if self.group:
            out["group"] = self.group
        if self.time:
            out["time"] = self.time
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        if not isinstance(data, dict):
            raise SchemaError(f"schema must be a mapping, got {type(data).__name__}")
        allowed = {"name", "labels", "features", "group", "time"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {unknown}; allowed: {sorted(allowed)}")
        if "labels" not in data:
            raise SchemaError("schema is missing required key 'labels'")
        if "features" not in data:
            raise SchemaError("schema is missing required key 'features'")
        labels = data["labels"]
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise SchemaError(f"'labels' must be a list of column names, got {labels!r}")
        if not isinstance(data["features"], list):
            raise SchemaError("'features' must be a list of feature declarations")
        features = tuple(_feature_from_dict(i, f) for i, f in enumerate(data["features"]))
        return cls(
            labels=tuple(labels),
            features=features,
            group=data.get("group"),
            time=data.get("time"),
            name=str(data.get("name", "dataset")),
        )

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.exists():
            raise SchemaError(f"schema file not found: {path}")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SchemaError(f"cannot parse schema file {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2))
        else:
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _feature_from_dict(index: int, raw: Any) -> Feature:
    where = f"features[{index}]"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where} needs a non-empty string 'name'")
    where = f"feature {name!r}"
    ftype = raw.get("type")
    if ftype not in _FEATURE_TYPES:
        raise SchemaError(
            f"{where}: unknown type {ftype!r}; expected one of {sorted(_FEATURE_TYPES)}"
        )
    klass = _FEATURE_TYPES[ftype]
    allowed = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SchemaError(
            f"{where}: unknown key(s) {unknown}; allowed for {ftype}: {sorted(allowed)}"
        )
    kwargs = dict(raw)
    try:
        return klass(**kwargs)
    except TypeError as exc:
        raise SchemaError(f"{where}: {exc}") from exc


def _check_positive_int(where: str, key: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SchemaError(f"{where}: '{key}' must be a positive integer, got {value!r}")


def _validate(schema: Schema) -> None:
    if not schema.labels:
        raise SchemaError("schema needs at least one label column")
    if not schema.features:
        raise SchemaError("schema needs at least one feature")
    names = [f.name for f in schema.features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"duplicate feature name(s) {dupes}")
    clash = sorted(set(names) & set(schema.labels))
    if clash:
        raise SchemaError(f"column(s) {clash} are declared both as label and feature")
    by_name = {f.name: f for f in schema.features}
    for f in schema.features:
        where = f"feature {f.name!r}"
        if isinstance(f, CategoricalFeature):
            _check_positive_int(where, "min_count", f.min_count, allow_none=False)
            _check_positive_int(where, "hash_buckets", f.hash_buckets)
        elif isinstance(f, NumericFeature):
            if f.normalizer not in NORMALIZERS:
                raise SchemaError(
                    f"{where}: unknown normalizer {f.normalizer!r}; expected one of {NORMALIZERS}"
                )
            if not isinstance(f.fill_value, (int, float)) or isinstance(f.fill_value, bool):
                raise SchemaError(f"{where}: 'fill_value' must be a number, got {f.fill_value!r}")
            _check_positive_int(where, "buckets", f.buckets)
        elif isinstance(f, SequenceFeature):
            _check_positive_int(where, "max_len", f.max_len, allow_none=False)
            _check_positive_int(where, "min_count", f.min_count, allow_none=False)
            if f.padding not in ("left", "right"):
                raise SchemaError(f"{where}: 'padding' must be 'left' or 'right'")
            if not isinstance(f.delimiter, str) or not f.delimiter:
                raise SchemaError(f"{where}: 'delimiter' must be a non-empty string")
        if f.embedding_dim is not None:
            _check_positive_int(where, "embedding_dim", f.embedding_dim)
        share = getattr(f, "share_vocab_with", None)
        if share is not None:
            target = by_name.get(share)
            if target is None:
                raise SchemaError(f"{where}: share_vocab_with={share!r} names no feature")
            if target is f:
                raise SchemaError(f"{where}: cannot share a vocabulary with itself")
            if isinstance(target, NumericFeature):
                raise SchemaError(f"{where}: cannot share a vocabulary with numeric {share!r}")
            if getattr(target, "share_vocab_with", None) is not None:
                raise SchemaError(
                    f"{where}: {share!r} itself shares a vocabulary; point at the owner instead"
                )
    for extra, key in ((schema.group, "group"), (schema.time, "time")):
        if extra is not None and not isinstance(extra, str):
            raise SchemaError(f"'{key}' must be a column name, got {extra!r}")
