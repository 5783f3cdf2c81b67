"""The feature map: the contract between preprocessing and models.

It is written next to processed data as ``feature_map.json`` and is all a model needs to
know about its inputs: field names, kinds, vocabulary sizes and sequence lengths.

Notation used across adrank: B batch size, F number of fields, D embedding dim,
L sequence length, T number of label tasks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

FEATURE_MAP_VERSION = 2
#: feature maps of these versions load (v1 has labels and a group column, no tasks or roles)
READABLE_VERSIONS = (1, 2)
FieldKind = Literal["categorical", "numeric", "sequence"]


@dataclass(frozen=True)
class FieldInfo:
    """One model input.

    ``categorical`` tensors are int64 (B,), ``numeric`` float32 (B,), ``sequence`` int64 (B, L)
    with ``0`` as padding. ``vocab_size`` counts padding and OOV ids. ``embedding_group`` is
    the field whose embedding table this field uses (itself unless it shares a vocabulary).
    """

    name: str
    kind: FieldKind
    vocab_size: int = 0
    max_len: int = 0
    embedding_group: str = ""
    embedding_dim: int | None = None
    target: str | None = None
    aligned_with: str | None = None
    #: > 0 for a pretrained field: its table is ``FeatureMap.vectors[name]`` (V, vectors_dim)
    vectors_dim: int = 0
    #: a pretrained table stays fixed in training (else it is fine-tuned)
    freeze: bool = False

    @property
    def table(self) -> str:
        return self.embedding_group or self.name


@dataclass(frozen=True)
class TaskInfo:
    """A task as the model and the trainer see it: ``label`` and ``given`` are columns of
    the batch's label matrix (:attr:`FeatureMap.labels`); ``output`` is the canonical output
    name (``pctr``, ``pcvr``, ``pctcvr``) or the task's own name."""

    name: str
    label: str
    type: str = "binary"
    weight: float = 1.0
    given: str | None = None
    output: str = ""


@dataclass(frozen=True)
class RoleInfo:
    """A role column of processed data: ``column`` in the Parquet file, ``kind`` as in
    :data:`adrank.data.schema.ROLES`, ``source`` the raw column, and for ``vocab`` roles the
    fitted ``values`` (id ``i + 1`` is ``values[i]``; 0 is unseen)."""

    role: str
    column: str
    kind: str
    source: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureMap:
    """Fields in model order, tasks, label columns and role columns.

    ``labels`` are the columns of the batch's label matrix (B, T) in order; ``group`` is the
    processed group column (kept for format-v1 callers; also ``roles["group"]``).
    """

    fields: tuple[FieldInfo, ...]
    labels: tuple[str, ...]
    group: str | None = None
    version: int = FEATURE_MAP_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    tasks: tuple[TaskInfo, ...] = ()
    roles: dict[str, RoleInfo] = field(default_factory=dict)
    #: pretrained field name -> its aligned table, a float32 array (V, d); saved next to
    #: the JSON as ``<stem>.vectors_<name>.npy`` (see :mod:`adrank.data.pretrained`)
    vectors: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tasks:  # format v1: every label is a binary task of the same name
            from adrank.data.schema import Task, infer_outputs

            plain = [Task(name=label, label=label) for label in self.labels]
            tasks = tuple(
                TaskInfo(t.name, t.label, output=o)
                for t, o in zip(plain, infer_outputs(plain), strict=True)
            )
            object.__setattr__(self, "tasks", tasks)
        if self.group and "group" not in self.roles:
            roles = dict(self.roles)
            roles["group"] = RoleInfo("group", self.group, "hash", self.group)
            object.__setattr__(self, "roles", roles)

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"feature map has no field {name!r}; known: {self.names}")

    def of_kind(self, *kinds: FieldKind) -> list[FieldInfo]:
        return [f for f in self.fields if f.kind in kinds]

    def task(self, name: str) -> TaskInfo:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task {name!r}; tasks: {[t.name for t in self.tasks]}")

    def label_index(self, column: str) -> int:
        return self.labels.index(column)

    @property
    def outputs(self) -> dict[str, TaskInfo]:
        """Output name -> task, for every task."""
        return {t.output: t for t in self.tasks}

    def tensor_roles(self) -> dict[str, RoleInfo]:
        """Roles that travel in :class:`~adrank.data.batches.Batch` (all but ``raw``)."""
        return {k: r for k, r in self.roles.items() if r.kind != "raw"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "labels": list(self.labels),
            "group": self.group,
            "tasks": [asdict(t) for t in self.tasks],
            "roles": {k: asdict(r) for k, r in self.roles.items()},
            "fields": [asdict(f) for f in self.fields],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureMap:
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"feature map version {version!r} is not supported (this adrank reads "
                f"{list(READABLE_VERSIONS)}); re-run preprocessing with this adrank version"
            )
        roles = {
            k: RoleInfo(**{**r, "values": tuple(r.get("values", ()))})
            for k, r in (data.get("roles") or {}).items()
        }
        return cls(
            fields=tuple(FieldInfo(**f) for f in data["fields"]),
            labels=tuple(data["labels"]),
            group=data.get("group"),
            extra=dict(data.get("extra") or {}),
            tasks=tuple(TaskInfo(**t) for t in data.get("tasks") or ()),
            roles=roles,
        )

    def save(self, path: str | Path) -> None:
        """Write the JSON, and each pretrained table next to it (:meth:`vectors_path`)."""
        from adrank.data.pretrained import save_table
        from adrank.utils import atomic_write_text

        path = Path(path)
        for f in self.fields:
            if f.vectors_dim:
                if f.name not in self.vectors:
                    raise ValueError(f"pretrained field {f.name!r} has no vectors to save")
                save_table(self.vectors_path(path, f.name), self.vectors[f.name])
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @staticmethod
    def vectors_path(path: Path, name: str) -> Path:
        """Where the table of pretrained field ``name`` of the feature map at ``path`` is."""
        return path.with_name(f"{path.stem}.vectors_{name}.npy")

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        from adrank.data.pretrained import load_table

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"feature map not found: {path}")
        fm = cls.from_dict(json.loads(path.read_text()))
        for f in fm.fields:
            if f.vectors_dim:
                fm.vectors[f.name] = load_table(cls.vectors_path(path, f.name), f.name)
        return fm
