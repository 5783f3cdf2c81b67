"""Declarative schema (format v2): tasks, column roles, and categorical, numeric and
sequence features, and declared transforms that derive features from raw columns.

A schema is loaded from YAML/JSON (or built in code) and validated on load. Unknown keys,
unknown feature types, unknown roles and bad values raise :class:`SchemaError` naming the
offending key.

Example (YAML)::

    tasks:                  # what the model predicts (see Task)
      - {name: click, label: click}
      - {name: conversion, label: purchase, given: click}   # CVR: defined where click == 1
    roles:                  # columns that are not features (see ROLES)
      group: user_id        # gAUC, per-user metrics
      time: ts              # event time: time-ordered splits, streams
      weight: w             # per-row loss weight
      passthrough: [request_id]   # copied to prediction output, never seen by a model
    features:
      - {name: user_id, type: categorical, min_count: 1}
      - {name: ad_id, type: categorical, hash_buckets: 100000}
      - {name: price, type: numeric, normalizer: log1p, fill_value: 0}
      - {name: age, type: numeric, buckets: 10}          # quantile-bucketized -> categorical
      - {name: hist, type: sequence, delimiter: "|", max_len: 20, share_vocab_with: ad_id,
         target: ad_id}
      - {name: ad_text, type: pretrained, share_vocab_with: ad_id, vectors: ad_vectors.parquet}

``transforms`` (see :mod:`adrank.data.transforms`) derive columns from raw ones, in
training and serving alike::

    transforms:
      - {name: hour_of_day, fn: substring, input: hour, start: 6, length: 2}

Format v1 schemas (``labels: [click]`` with top-level ``group:`` / ``time:``) still load:
each label becomes a binary task of the same name, and ``group``/``time`` become roles.

Id convention for every vocabulary: ``0`` is padding, ``1`` is OOV (unseen, rare or missing),
real values start at ``2``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

# The declarations (schema_types) and the checks (schema_validation) live in modules of their
# own; every public name of both is importable from here (see __all__).
from adrank.data.schema_types import (
    CANONICAL_OUTPUTS,
    FEATURE_TYPES,
    NORMALIZERS,
    NUM_RESERVED_IDS,
    OOV_ID,
    PAD_ID,
    ROLES,
    CategoricalFeature,
    Feature,
    Normalizer,
    NumericFeature,
    PretrainedFeature,
    RoleSpec,
    SchemaError,
    SequenceFeature,
    Task,
    TaskType,
    infer_outputs,
)
from adrank.data.schema_validation import (
    feature_from_dict,
    normalize_roles,
    pretrained_sources,
    task_from_dict,
    validate_schema,
)

if TYPE_CHECKING:  # imported lazily: transforms need polars, a schema alone does not
    from adrank.data.transforms import Transform

__all__ = [
    "CANONICAL_OUTPUTS",
    "NORMALIZERS",
    "NUM_RESERVED_IDS",
    "OOV_ID",
    "PAD_ID",
    "ROLES",
    "CategoricalFeature",
    "Feature",
    "Normalizer",
    "NumericFeature",
    "PretrainedFeature",
    "RoleSpec",
    "Schema",
    "SchemaError",
    "SequenceFeature",
    "Task",
    "TaskType",
    "infer_outputs",
]

_FEATURE_TYPES = FEATURE_TYPES  # the feature types by `type:` key, under its former name


@dataclass(frozen=True)
class Schema:
    """The full declaration of a dataset's columns.

    ``tasks`` and ``roles`` are the format-v2 declaration. ``labels``, ``group`` and ``time``
    are kept in step with them (``labels`` lists every label column: the tasks' labels, then
    ``given`` columns that are no task's label), so code and schemas written for format v1
    keep working: ``Schema(labels=("click",), features=...)`` declares one binary task.
    """

    labels: tuple[str, ...] = ()
    features: tuple[Feature, ...] = ()
    group: str | None = None
    time: str | None = None
    name: str = "dataset"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    tasks: tuple[Task, ...] = ()
    roles: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[Transform, ...] = ()

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        if not tasks:
            tasks = tuple(Task(name=label, label=label) for label in self.labels)
        roles = normalize_roles(self.roles)
        for key, value in (("group", self.group), ("time", self.time)):
            if value is not None:
                if key in roles and roles[key] != value:
                    raise SchemaError(f"'{key}: {value}' disagrees with roles.{key}={roles[key]!r}")
                roles[key] = value
        labels = [t.label for t in tasks]
        labels += [t.given for t in tasks if t.given is not None]
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "labels", tuple(dict.fromkeys(labels)))
        object.__setattr__(self, "group", roles.get("group"))
        object.__setattr__(self, "time", roles.get("time"))
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "features", pretrained_sources(tuple(self.features)))
        validate_schema(self)

    # ---- lookups -------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(f"schema has no feature named {name!r}; known: {self.feature_names}")

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise SchemaError(f"unknown task {name!r}; tasks: {[t.name for t in self.tasks]}")

    def role_columns(self) -> list[str]:
        """Raw columns read for roles (passthrough columns included), without duplicates."""
        cols: list[str] = []
        for value in self.roles.values():
            cols += list(value) if isinstance(value, tuple) else [value]
        return list(dict.fromkeys(cols))

    def source_columns(self) -> list[str]:
        """Raw columns the schema reads (labels, features, roles, and the inputs of its
        transforms in place of the columns they derive), without duplicates."""
        derived = {t.name for t in self.transforms}
        cols: list[str] = list(self.labels)
        for f in self.features:
            source = f.source or f.name
            if source not in derived:
                cols.append(source)
        for t in self.transforms:
            cols += [c for c in t.inputs if c not in derived or c == t.name]
        cols += self.role_columns()
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
        """The format-v2 mapping (``tasks`` and ``roles``; defaults left out)."""
        feats = [_without_defaults(f, keep=("name", "type")) for f in self.features]
        out: dict[str, Any] = {
            "name": self.name,
            "tasks": [_without_defaults(t, keep=("name", "label")) for t in self.tasks],
            "features": feats,
        }
        if self.transforms:
            out["transforms"] = [t.to_dict() for t in self.transforms]
        if self.roles:
            out["roles"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.roles.items()
            }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        if not isinstance(data, dict):
            raise SchemaError(f"schema must be a mapping, got {type(data).__name__}")
        allowed = {"name", "labels", "tasks", "roles", "transforms", "features", "group", "time"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {unknown}; allowed: {sorted(allowed)}")
        if "labels" not in data and "tasks" not in data:
            raise SchemaError("schema needs 'tasks' (or the format-v1 key 'labels')")
        if "labels" in data and "tasks" in data:
            raise SchemaError("give either 'tasks' or the format-v1 'labels', not both")
        if "features" not in data:
            raise SchemaError("schema is missing required key 'features'")
        labels: Any = data.get("labels", [])
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise SchemaError(f"'labels' must be a list of column names, got {labels!r}")
        tasks_raw = data.get("tasks", [])
        if not isinstance(tasks_raw, list):
            raise SchemaError("'tasks' must be a list of task declarations")
        tasks = tuple(task_from_dict(i, t) for i, t in enumerate(tasks_raw))
        if not isinstance(data["features"], list):
            raise SchemaError("'features' must be a list of feature declarations")
        features = tuple(feature_from_dict(i, f) for i, f in enumerate(data["features"]))
        transforms_raw = data.get("transforms") or []
        if not isinstance(transforms_raw, list):
            raise SchemaError("'transforms' must be a list of transform declarations")
        from adrank.data.transforms import transform_from_dict

        transforms = tuple(transform_from_dict(i, t) for i, t in enumerate(transforms_raw))
        name = data.get("name", "dataset")
        if isinstance(name, bool) or not isinstance(name, (str, int, float)) or name == "":
            raise SchemaError(f"'name' must be a non-empty string, got {name!r}")
        roles = data.get("roles") or {}
        if not isinstance(roles, dict):
            raise SchemaError(f"'roles' must be a mapping of role -> column, got {roles!r}")
        return cls(
            labels=tuple(labels),
            features=features,
            group=data.get("group"),
            time=data.get("time"),
            name=str(name),
            tasks=tasks,
            roles=dict(roles),
            transforms=transforms,
        )

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.exists():
            raise SchemaError(f"schema file not found: {path}")
        if not path.is_file():
            raise SchemaError(f"schema path is not a file: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SchemaError(f"cannot parse schema file {path}: {exc}") from exc
        try:
            schema = cls.from_dict(data)
        except SchemaError as exc:
            raise SchemaError(f"{path}: {exc}") from exc
        # relative vector files are relative to the schema file, not the working directory
        features = tuple(
            dataclasses.replace(f, vectors=str(path.parent / f.vectors))
            if isinstance(f, PretrainedFeature) and f.vectors and not Path(f.vectors).is_absolute()
            else f
            for f in schema.features
        )
        return dataclasses.replace(schema, features=features)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2))
        else:
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _without_defaults(obj: Any, keep: tuple[str, ...]) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    defaults = {fl.name: fl.default for fl in dataclasses.fields(obj)}
    return {k: d.pop(k) for k in keep} | {k: v for k, v in d.items() if v != defaults.get(k)}
