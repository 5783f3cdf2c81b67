"""Export raw splits so other tools can train on exactly the same rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.schema import Schema
from adrank.outputs import publish_dir
from adrank.utils import atomic_write

EXPORT_KIND = "dataset-export"
#: what an export directory written before output markers existed holds (it may be replaced)
LEGACY_ENTRIES = frozenset(
    f"{s}.{ext}" for s in ("train", "valid", "test") for ext in ("csv", "parquet")
)


def export_splits(
    splits: dict[str, pl.DataFrame], schema: Schema, output_dir: str | Path, fmt: str = "csv"
) -> dict[str, Path]:
    """Write ``<split>.csv`` or ``<split>.parquet`` with the label(s) and raw columns: the
    features' raw columns, the inputs of the schema's transforms (Criteo's raw integers,
    Avazu's ``hour``) in place of the columns they derive, and the role columns (group, time,
    ...). These are the rows as users have them: ``adrank predict`` and the server take them
    as they are.

    ``output_dir`` is a one-shot output (:func:`adrank.outputs.publish_dir`): it is built
    beside the target and renamed into place, and replaces only an earlier export (never a
    directory holding anything else). Returns the path of each split's file."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; expected csv or parquet (--format)")
    columns = schema.source_columns()
    frames: dict[str, pl.DataFrame] = {}
    for name, frame in splits.items():
        schema.check_columns(frame.columns, where=f"the {name} split")
        frames[name] = frame.select(columns)

    def build(tmp: Path) -> None:
        for name, out in frames.items():
            path = tmp / f"{name}.{fmt}"
            if fmt == "csv":
                atomic_write(path, lambda p, out=out: out.write_csv(p))
            else:
                atomic_write(path, lambda p, out=out: out.write_parquet(p))

    target = publish_dir(output_dir, EXPORT_KIND, build, legacy_entries=LEGACY_ENTRIES)
    return {name: target / f"{name}.{fmt}" for name in frames}
