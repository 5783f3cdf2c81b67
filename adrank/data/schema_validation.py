"""Reading and checking schema declarations: the feature, task and role entries of a
schema mapping, and the checks :class:`~adrank.data.schema.Schema` runs when built (each
error a :class:`~adrank.data.schema_types.SchemaError` naming the offending key)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from adrank.data.schema_types import (
    CANONICAL_OUTPUTS,
    FEATURE_TYPES,
    NORMALIZERS,
    ROLES,
    CategoricalFeature,
    Feature,
    NumericFeature,
    PretrainedFeature,
    SchemaError,
    SequenceFeature,
    Task,
    infer_outputs,
)

if TYPE_CHECKING:
    from adrank.data.schema import Schema


def normalize_roles(raw: Any) -> dict[str, Any]:
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


def task_from_dict(index: int, raw: Any) -> Task:
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


def feature_from_dict(index: int, raw: Any) -> Feature:
    where = f"features[{index}]"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where} needs a non-empty string 'name'")
    where = f"feature {name!r}"
    ftype = raw.get("type")
    if ftype not in FEATURE_TYPES:
        raise SchemaError(
            f"{where}: unknown type {ftype!r}; expected one of {sorted(FEATURE_TYPES)}"
        )
    klass = FEATURE_TYPES[ftype]
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


def pretrained_sources(features: tuple[Feature, ...]) -> tuple[Feature, ...]:
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


def validate_schema(schema: Schema) -> None:
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
    for f in schema.features:
        if f.source is not None and (not isinstance(f.source, str) or not f.source):
            raise SchemaError(
                f"feature {f.name!r}: 'source' must be a column name, got {f.source!r}"
            )
    clash = sorted(
        (set(names) | {f.source for f in schema.features if f.source}) & set(schema.labels)
    )
    if clash:  # a feature reading a label column would leak the target into the inputs
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
            if (
                not isinstance(f.fill_value, (int, float))
                or isinstance(f.fill_value, bool)
                or not math.isfinite(f.fill_value)
            ):  # a NaN/inf fill would reach the model (and a z-score would turn all NaN)
                raise SchemaError(
                    f"{where}: 'fill_value' must be a finite number, got {f.fill_value!r}"
                )
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
