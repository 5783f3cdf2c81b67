"""Criteo Display Advertising Challenge (Kaggle 2014) rows, raw 40-column TSV.

Local layout ``criteo/{train,dev,test}.txt.gz``: a pre-split sample (7,200 / 409 / 391 rows)
used as train / valid / test. No header; columns ``label, I1..I13, C1..C26``.

Numeric columns get the usual Criteo treatment (Kaggle winners, FuxiCTR/BARS Criteo_x1):
a missing value is filled with 0, then ``v > 2 -> int(floor(log(v) ** 2))``, else
``int(v)``; the result becomes a categorical string per column (``"0"``, ``"-1"``, ``"9"``
...). Since definition **version 2** the builder returns the raw integers and the schema
declares the bucketing as transforms (``log_square_bucket``, in place: ``I1`` -> ``I1``),
so the processor applies it in training and serving alike and ``adrank predict`` / the
server take raw Criteo rows. Categorical columns ``C1..C26`` stay strings (empty -> null
-> OOV in the processor).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.datasets.base import SPLITS, DatasetBuilder, RemoteFile, register_dataset
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema
from adrank.data.transforms import LogSquareBucket

_BASE = (
    "https://raw.githubusercontent.com/Lapis-Hong/Wide-ResDNN/"
    "9889f939deb904a35692e2efdc6ab4f743a7df71/data/criteo"
)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_COLUMNS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
RAW_COLUMNS: tuple[str, ...] = ("label", *NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS)


def _check_integers(frame: pl.DataFrame, path: Path) -> None:
    for c in NUMERIC_COLUMNS:
        raw = frame.get_column(c)
        bad = raw.is_not_null() & raw.cast(pl.Float64, strict=False).is_null()
        if bad.any():
            idx = int(bad.arg_max())  # type: ignore[arg-type]
            raise DataFormatError(
                f"{path}: integer column {c} has non-numeric value {raw[idx]!r} at row {idx}"
            )


@register_dataset
class CriteoBuilder(DatasetBuilder):
    """Criteo sample: 13 bucketized integer fields + 26 hashed categorical fields."""

    name = "criteo"
    version = 2  # raw integers out, bucketing declared as schema transforms
    description = (
        "Criteo Kaggle rows (7,200/409/391), 13 integer fields log^2-bucketized to categories "
        "+ 26 categorical fields; for loader/integration tests, not leaderboard numbers"
    )
    files = (
        RemoteFile("criteo/train.txt.gz", f"{_BASE}/train.csv",
                   "8fce633e9f4ad3236bcf5529b3ad9f31", 1_744_474),
        RemoteFile("criteo/dev.txt.gz", f"{_BASE}/dev.csv",
                   "6ebf9014228616a20520ec76089eba82", 98_922),
        RemoteFile("criteo/test.txt.gz", f"{_BASE}/test.csv",
                   "ad8f778b31de2ffc1afa4d03931f18a7", 95_122),
    )  # fmt: skip

    def schema(self) -> Schema:
        return Schema(
            labels=("label",),
            features=tuple(CategoricalFeature(c) for c in (*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS)),
            transforms=tuple(LogSquareBucket(name=c, input=c) for c in NUMERIC_COLUMNS),
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        self.require_files(Path(data_dir))
        out = {}
        for split, remote in zip(SPLITS, self.files, strict=True):
            path = self.locate(Path(data_dir), remote.path)
            frame = read_raw(
                path, separator="\t", has_header=False, column_names=list(RAW_COLUMNS),
                bad_rows=bad_rows,
            ).frame  # fmt: skip
            _check_integers(frame, path)
            frame = frame.with_columns(pl.col("label").cast(pl.Int64))
            out[split] = frame.select(self.schema().source_columns())
        return out
