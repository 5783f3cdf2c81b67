"""Data for ``python -m benchmarks gpu``: synthetic Criteo-shaped tensors and the exported
frappe split (a tensor file, so the GPU machine needs no polars)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adrank.config import RunConfig
from adrank.data.batches import Batch, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Split:
    """A split for both sides: host tensors (adrank's TensorData) and its feature map."""

    feature_map: FeatureMap
    data: TensorData
    source: str
    params: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)  # the cells and the ablation share one split
def criteo_split(rows: int, max_cardinality: int, seed: int = 0) -> Split:
    """Synthetic Criteo-shaped tensors: I1..I13 uniform [0, 1), C1..C26 uniform ids below
    Criteo's cardinalities capped at ``max_cardinality``, coin-flip labels."""
    from adrank.data.synth import CATEGORICAL_FIELDS, NUMERIC_FIELDS, criteo_cardinalities

    cards = criteo_cardinalities(max_cardinality=max_cardinality)
    fields = [FieldInfo(n, "numeric") for n in NUMERIC_FIELDS]
    fields += [
        FieldInfo(n, "categorical", k) for n, k in zip(CATEGORICAL_FIELDS, cards, strict=True)
    ]
    gen = torch.Generator().manual_seed(seed)
    features = {n: torch.rand(rows, generator=gen) for n in NUMERIC_FIELDS}
    for name, k in zip(CATEGORICAL_FIELDS, cards, strict=True):
        features[name] = torch.randint(0, k, (rows,), generator=gen)
    labels = torch.randint(0, 2, (rows, 1), generator=gen).float()
    fm = FeatureMap(tuple(fields), ("label",))
    source = f"synthetic Criteo-shaped, {rows:,} rows, cardinalities capped at {max_cardinality:,}"
    return Split(fm, TensorData(Batch(features, labels)), source)


def export_frappe(path: Path, data_dir: str | None) -> dict[str, Any]:
    """Write the prepared frappe splits (ids as int32) and feature map JSON to ``path``."""
    from adrank.data.prepare import prepare_dataset

    prepared = prepare_dataset("frappe", data_dir=data_dir)
    fm = prepared.feature_map
    splits = {}
    for name, file in prepared.splits.items():
        batch = TensorData.from_parquet(file, fm).data
        splits[name] = _pack_split(batch)
    save_frappe(path, fm, splits)
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "rows": {k: len(v["labels"]) for k, v in splits.items()},
    }


def _pack_split(batch: Batch) -> dict[str, Any]:
    """int64 tensors stored as int32 when their values fit (half the bytes to carry)."""

    def small(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.int64 and (t.numel() == 0 or int(t.abs().max()) < 2**31):
            return t.to(torch.int32)
        return t

    return {
        "features": {k: small(v) for k, v in batch.features.items()},
        "labels": batch.labels,
        "roles": {k: small(v) for k, v in batch.roles.items()},
    }


def save_frappe(path: Path, fm: FeatureMap, splits: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"feature_map": json.dumps(fm.to_dict()), "splits": splits}, path)


def load_frappe(path: Path) -> tuple[FeatureMap, dict[str, TensorData]]:
    """The feature map and splits written by :func:`export_frappe` (ids back to int64)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no exported frappe split; make it where polars is installed with "
            f"`python -m benchmarks gpu --export-frappe {path}` and carry it"
        )
    payload = torch.load(path, weights_only=True)
    fm = FeatureMap.from_dict(json.loads(payload["feature_map"]))

    def wide(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.int64) if t.dtype == torch.int32 else t

    splits = {}
    for name, s in payload["splits"].items():
        features = {k: wide(v) for k, v in s["features"].items()}
        roles = {k: wide(v) for k, v in s["roles"].items()}
        splits[name] = TensorData(Batch(features, s["labels"], roles=roles))
    return fm, splits


def frappe_split(path: Path, model: str, split: str = "train") -> Split:
    fm, splits = load_frappe(path)
    params = RunConfig.load(ROOT / "configs" / "models" / "frappe" / f"{model}.yaml").params
    return Split(fm, splits[split], f"frappe {split} split ({len(splits[split]):,} rows)", params)
