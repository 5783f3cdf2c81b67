"""Export raw splits so other tools can train on exactly the same rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.schema import Schema
from adrank.utils import atomic_write


def export_splits(
    splits: dict[str, pl.DataFrame], schema: Schema, output_dir: str | Path, fmt: str = "csv"
) -> dict[str, Path]:
    """Write ``<split>.csv`` or ``<split>.parquet`` with the label(s) and raw feature columns
    (plus group/time columns when the schema has them), each file written atomically."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; expected 'csv' or 'parquet'")
    output_dir = Path(output_dir)
    columns = schema.source_columns()
    paths: dict[str, Path] = {}
    for name, frame in splits.items():
        schema.check_columns(frame.columns, where=f"the {name} split")
        out = frame.select(columns)
        path = output_dir / f"{name}.{fmt}"
        if fmt == "csv":
            atomic_write(path, lambda p, out=out: out.write_csv(p))
        else:
            atomic_write(path, lambda p, out=out: out.write_parquet(p))
        paths[name] = path
    return paths
