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
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:  # imported lazily: transforms need polars, a schema alone does not
    from adrank.data.transforms import Transform

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
        target: the categorical feature a model compares this history with (DIN's target
            item: ``hist_item_id`` targets ``item_id``).
        aligned_with: another sequence feature this one is aligned with position by
            position (a multi-attribute history: ``hist_genre`` aligned with
            ``hist_item_id``). Both must have the same ``max_len`` and ``padding``.
    """

    name: str
    max_len: int
    delimiter: str = "|"
    padding: Literal["left", "right"] = "left"
    share_vocab_with: str | None = None
    min_count: int = 1
    embedding_dim: int | None = None
    source: str | None = None
    target: str | None = None
    aligned_with: str | None = None
    type: Literal["sequence"] = "sequence"


@dataclass(frozen=True)
class PretrainedFeature(CategoricalFeature):
    """Pretrained vectors of an id feature: one float vector per id, read from Parquet.

    The field's ids are those of ``share_vocab_with`` (required: the categorical id feature
    the vectors belong to, e.g. ``item_id``), encoded with its vocabulary; its embedding
    table is the vectors, aligned row by row to that vocabulary by the processor. Ids
    without a vector (padding, OOV, ids absent from the file) get zeros. A sequence that
    ``share_vocab_with`` this feature (aligned with the id history) gives a history of the
    vectors.

    Attributes:
        vectors: Parquet file with one row per id (relative paths are relative to the schema
            file's folder when the schema is loaded from a file). May be left out when the
            vectors are passed in code (``FeatureProcessor.fit(frame, vectors=...)``, or a
            dataset that builds them, such as ``movielens_100k_text``).
        id_column: the Parquet column holding the ids (raw values, as in the data).
        vector_column: the Parquet column holding the vectors (a list of floats per row).
        dim: the expected vector length (checked when given).
        freeze: ``True`` keeps the vectors fixed in training; ``False`` fine-tunes them.
    """

    vectors: str | None = None
    id_column: str = "id"
    vector_column: str = "vector"
    dim: int | None = None
    freeze: bool = True
    type: Literal["pretrained"] = "pretrained"  # type: ignore[assignment]


Feature = CategoricalFeature | NumericFeature | SequenceFeature

TaskType = Literal["binary", "regression"]
#: canonical CTR/CVR outputs: click per impression, conversion given a click, and
#: click-and-conversion per impression (``pctcvr = pctr * pcvr``)
CANONICAL_OUTPUTS: tuple[str, ...] = ("pctr", "pcvr", "pctcvr")


@dataclass(frozen=True)
class Task:
    """One prediction target.

    Attributes:
        name: the task's name (metric prefix, ``--set task=NAME``).
        label: the label column.
        type: ``binary`` (0/1 label, BCE loss) or ``regression`` (real label, MSE loss).
        weight: the task's weight in the training loss.
        given: a binary label column; the task is defined only on rows where it is 1 (CVR is
            given a click). Its loss and its metrics ignore the other rows.
        output: the canonical output this task's label corresponds to (``pctr``, ``pcvr`` or
            ``pctcvr``). Left out, it is inferred (see :func:`infer_outputs`).
    """

    name: str
    label: str
    type: TaskType = "binary"
    weight: float = 1.0
    given: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class RoleSpec:
    """A column role besides features and labels.

    ``kind`` says how the processor stores it: ``float`` (float32), ``int`` (int64),
    ``hash`` (a stable 64-bit hash of the value, for ids such as users or lists), ``vocab``
    (ids fitted on the training split, 0 = unseen) and ``raw`` (the value as text, never a
    tensor: it reaches prediction output and never a model).
    """

    name: str
    kind: Literal["float", "int", "hash", "vocab", "raw"]
    description: str
    multi: bool = False
    bounds: tuple[float, float] | None = None  # allowed range (inclusive upper, exclusive 0)


#: Every role a schema may declare. Adding a role is one entry here: the processor, the
#: feature map and :class:`~adrank.data.batches.Batch` carry it generically.
ROLES: dict[str, RoleSpec] = {
    r.name: r
    for r in (
        RoleSpec("group", "hash", "group/user id: gAUC and per-user metrics"),
        RoleSpec("time", "int", "event time (integer, e.g. Unix seconds): ordering, streams"),
        RoleSpec("weight", "float", "per-row sample weight multiplying the loss (>= 0)"),
        RoleSpec("domain", "vocab", "domain/scenario id for multi-domain models and slices"),
        RoleSpec("position", "int", "display position of the impression (1 = top)"),
        RoleSpec("list_id", "hash", "id of the list/request an impression was shown in"),
        RoleSpec(
            "propensity",
            "float",
            "the logging policy's probability of showing the item (off-policy evaluation)",
            bounds=(0.0, 1.0),
        ),
        RoleSpec(
            "examination",
            "float",
            "the probability that the slot was looked at (unbiased learning to rank)",
            bounds=(0.0, 1.0),
        ),
        RoleSpec("passthrough", "raw", "metadata copied to prediction output", multi=True),
    )
}
_FEATURE_TYPES: dict[str, type] = {
    "categorical": CategoricalFeature,
    "numeric": NumericFeature,
    "sequence": SequenceFeature,
    "pretrained": PretrainedFeature,
}


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
        roles = _normalize_roles(self.roles)
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
        object.__setattr__(self, "features", _pretrained_sources(tuple(self.features)))
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
        tasks = tuple(_task_from_dict(i, t) for i, t in enumerate(tasks_raw))
        if not isinstance(data["features"], list):
            raise SchemaError("'features' must be a list of feature declarations")
        features = tuple(_feature_from_dict(i, f) for i, f in enumerate(data["features"]))
        transforms_raw = data.get("transforms") or []
        if not isinstance(transforms_raw, list):
            raise SchemaError("'transforms' must be a list of transform declarations")
        from adrank.data.transforms import transform_from_dict

        transforms = tuple(transform_from_dict(i, t) for i, t in enumerate(transforms_raw))
        roles = data.get("roles") or {}
        if not isinstance(roles, dict):
            raise SchemaError(f"'roles' must be a mapping of role -> column, got {roles!r}")
        return cls(
            labels=tuple(labels),
            features=features,
            group=data.get("group"),
            time=data.get("time"),
            name=str(data.get("name", "dataset")),
            tasks=tasks,
            roles=dict(roles),
            transforms=transforms,
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


def _normalize_roles(raw: Any) -> dict[str, Any]:
    """Validate a role mapping: known roles, column names as strings (a list for ``multi``)."""
    if not isinstance(raw, dict):
        raise SchemaError(f"'roles' must be a mapping of role -> column, got {raw!r}")
    out: dict[str, Any] = {}
    for role, value in raw.items():
        spec = ROLES.get(role)
        if spec is None:
            raise SchemaError(f"unknown role {role!r}; known roles: {sorted(ROLES)}")
        if spec.multi:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, (list, tuple)) or not all(
                isinstance(v, str) and v for v in values
            ):
                raise SchemaError(f"roles.{role} must be a column name or a list of them")
            out[role] = tuple(values)
        elif not isinstance(value, str) or not value:
            raise SchemaError(f"roles.{role} must be a column name, got {value!r}")
        else:
            out[role] = value
    return out


def _task_from_dict(index: int, raw: Any) -> Task:
    if isinstance(raw, str):
        return Task(name=raw, label=raw)
    if not isinstance(raw, dict):
        raise SchemaError(f"tasks[{index}] must be a mapping, got {raw!r}")
    allowed = {f.name for f in dataclasses.fields(Task)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SchemaError(f"tasks[{index}]: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    data = dict(raw)
    if "label" not in data and "name" in data:
        data["label"] = data["name"]
    if "name" not in data and "label" in data:
        data["name"] = data["label"]
    if "name" not in data:
        raise SchemaError(f"tasks[{index}] needs a 'name' or a 'label'")
    return Task(**data)


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


def _pretrained_sources(features: tuple[Feature, ...]) -> tuple[Feature, ...]:
    """A pretrained feature reads its id feature's raw column unless it names its own."""
    by_name = {f.name: f for f in features}
    out: list[Feature] = []
    for f in features:
        owner = by_name.get(f.share_vocab_with or "") if isinstance(f, PretrainedFeature) else None
        if isinstance(f, PretrainedFeature) and f.source is None and owner is not None:
            f = dataclasses.replace(f, source=owner.source or owner.name)
        out.append(f)
    return tuple(out)


def _validate_pretrained(f: PretrainedFeature, by_name: dict[str, Feature]) -> None:
    where = f"feature {f.name!r} (pretrained)"
    owner = by_name.get(f.share_vocab_with or "")
    if (
        not isinstance(owner, CategoricalFeature)
        or isinstance(owner, PretrainedFeature)
        or owner.share_vocab_with is not None
    ):
        raise SchemaError(
            f"{where}: 'share_vocab_with' must name the categorical id feature the vectors "
            f"belong to (one with its own vocabulary, e.g. item_id), got {f.share_vocab_with!r}"
        )
    if f.hash_buckets is not None or owner.hash_buckets is not None:
        raise SchemaError(
            f"{where}: pretrained vectors need a fitted vocabulary; hashed ids "
            "(hash_buckets) collide, so they cannot be aligned to vectors"
        )
    if f.vectors is not None and (not isinstance(f.vectors, str) or not f.vectors):
        raise SchemaError(f"{where}: 'vectors' must be a Parquet file path, got {f.vectors!r}")
    for key in ("id_column", "vector_column"):
        value = getattr(f, key)
        if not isinstance(value, str) or not value:
            raise SchemaError(f"{where}: '{key}' must be a column name, got {value!r}")
    _check_positive_int(where, "dim", f.dim)
    if not isinstance(f.freeze, bool):
        raise SchemaError(f"{where}: 'freeze' must be true or false, got {f.freeze!r}")


def _check_positive_int(where: str, key: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SchemaError(f"{where}: '{key}' must be a positive integer, got {value!r}")


def _validate_tasks(schema: Schema) -> None:
    names = [t.name for t in schema.tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"duplicate task name(s) {dupes}")
    labels = [t.label for t in schema.tasks]
    for t in schema.tasks:
        where = f"task {t.name!r}"
        if not isinstance(t.name, str) or not t.name or not isinstance(t.label, str) or not t.label:
            raise SchemaError(f"{where}: 'name' and 'label' must be non-empty strings")
        if t.type not in ("binary", "regression"):
            raise SchemaError(f"{where}: type must be 'binary' or 'regression', got {t.type!r}")
        if (
            not isinstance(t.weight, (int, float))
            or isinstance(t.weight, bool)
            or not t.weight >= 0
            or t.weight == float("inf")
        ):
            raise SchemaError(f"{where}: 'weight' must be a finite number >= 0, got {t.weight!r}")
        if t.given is not None:
            if not isinstance(t.given, str) or not t.given:
                raise SchemaError(f"{where}: 'given' must be a label column name")
            if t.given == t.label:
                raise SchemaError(f"{where}: a task cannot be given its own label {t.label!r}")
            giver = next((g for g in schema.tasks if g.label == t.given), None)
            if giver is not None and giver.type != "binary":
                raise SchemaError(
                    f"{where}: given={t.given!r} is the label of regression task "
                    f"{giver.name!r}; a 'given' label must be binary (0/1)"
                )
        if t.output is not None and t.output not in CANONICAL_OUTPUTS:
            raise SchemaError(
                f"{where}: output must be one of {list(CANONICAL_OUTPUTS)}, got {t.output!r}"
            )
    outputs = [o for o in infer_outputs(schema.tasks) if o in CANONICAL_OUTPUTS]
    dupes = sorted({o for o in outputs if outputs.count(o) > 1})
    if dupes:
        raise SchemaError(f"output(s) {dupes} are claimed by more than one task")
    if len(set(labels)) != len(labels):
        raise SchemaError(f"two tasks share a label column: {labels}")


def infer_outputs(tasks: tuple[Task, ...] | list[Task]) -> list[str]:
    """Each task's output name, in task order.

    An explicit ``output`` wins. Otherwise a binary task with a ``given`` label is ``pcvr``
    (when it is the only such task), the binary task whose label is that ``given`` (or the
    only task of the schema) is ``pctr``, and any other task is named after itself.
    """
    tasks = list(tasks)
    explicit = {t.output for t in tasks if t.output}
    conditional = [t for t in tasks if t.given is not None and t.type == "binary"]
    cvr = conditional[0] if len(conditional) == 1 and "pcvr" not in explicit else None
    out: list[str] = []
    for t in tasks:
        if t.output:
            out.append(t.output)
        elif t is cvr:
            out.append("pcvr")
        elif (
            t.type == "binary"
            and t.given is None
            and "pctr" not in explicit
            and ((cvr is not None and t.label == cvr.given) or len(tasks) == 1)
        ):
            out.append("pctr")
        else:
            out.append(t.name)
    return out


def _validate(schema: Schema) -> None:
    if not schema.tasks:
        raise SchemaError("schema needs at least one task (or label column)")
    if not schema.features:
        raise SchemaError("schema needs at least one feature")
    _validate_tasks(schema)
    outputs = [t.name for t in schema.transforms]
    dupes = sorted({n for n in outputs if outputs.count(n) > 1})
    if dupes:
        raise SchemaError(f"transform output(s) {dupes} are declared more than once")
    derived_labels = sorted(set(outputs) & set(schema.labels))
    if derived_labels:
        raise SchemaError(f"label column(s) {derived_labels} cannot be transform outputs")
    names = [f.name for f in schema.features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"duplicate feature name(s) {dupes}")
    clash = sorted(set(names) & set(schema.labels))
    if clash:
        raise SchemaError(f"column(s) {clash} are declared both as label and feature")
    role_clash = sorted(set(schema.role_columns()) & set(schema.labels))
    if role_clash:
        raise SchemaError(f"column(s) {role_clash} are declared both as label and role")
    by_name = {f.name: f for f in schema.features}
    for f in schema.features:
        where = f"feature {f.name!r}"
        if isinstance(f, PretrainedFeature):
            _validate_pretrained(f, by_name)
        elif isinstance(f, CategoricalFeature):
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
            _validate_sequence_links(f, by_name)
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
            if isinstance(target, PretrainedFeature) and not isinstance(f, SequenceFeature):
                raise SchemaError(
                    f"{where}: only a sequence (a history of the vectors) may share the "
                    f"vocabulary of pretrained {share!r}; share {target.share_vocab_with!r}'s"
                )
            if getattr(target, "share_vocab_with", None) is not None and not isinstance(
                target, PretrainedFeature
            ):
                raise SchemaError(
                    f"{where}: {share!r} itself shares a vocabulary; point at the owner instead"
                )


def _validate_sequence_links(f: SequenceFeature, by_name: dict[str, Feature]) -> None:
    where = f"feature {f.name!r}"
    if f.target is not None:
        target = by_name.get(f.target)
        if not isinstance(target, CategoricalFeature):
            raise SchemaError(f"{where}: target={f.target!r} must name a categorical feature")
    if f.aligned_with is not None:
        other = by_name.get(f.aligned_with)
        if not isinstance(other, SequenceFeature) or other is f:
            raise SchemaError(
                f"{where}: aligned_with={f.aligned_with!r} must name another sequence feature"
            )
        if (other.max_len, other.padding, other.delimiter) != (f.max_len, f.padding, f.delimiter):
            raise SchemaError(
                f"{where}: aligned_with={f.aligned_with!r} needs the same max_len, padding and "
                "delimiter"
            )
