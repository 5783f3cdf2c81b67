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

FEATURE_MAP_VERSION = 1
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

    @property
    def table(self) -> str:
        return self.embedding_group or self.name


@dataclass(frozen=True)
class FeatureMap:
    """Fields in model order, label names, and optional group column name."""

    fields: tuple[FieldInfo, ...]
    labels: tuple[str, ...]
    group: str | None = None
    version: int = FEATURE_MAP_VERSION
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "labels": list(self.labels),
            "group": self.group,
            "fields": [asdict(f) for f in self.fields],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureMap:
        version = data.get("version")
        if version != FEATURE_MAP_VERSION:
            raise ValueError(
                f"feature map version {version!r} is not supported (expected "
                f"{FEATURE_MAP_VERSION}); re-run preprocessing with this adrank version"
            )
        return cls(
            fields=tuple(FieldInfo(**f) for f in data["fields"]),
            labels=tuple(data["labels"]),
            group=data.get("group"),
            extra=dict(data.get("extra") or {}),
        )

    def save(self, path: str | Path) -> None:
        from adrank.utils import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FeatureMap:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"feature map not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))
