"""Numeric features: reading a column (or serving values) as float64, the statistics and
quantile bucket boundaries fitted on the training split, and encoding with them (a
normalized float32, or a bucket id). The rules are listed in :mod:`adrank.data.processor`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl

from adrank.data.schema import NUM_RESERVED_IDS, OOV_ID, NumericFeature, SchemaError
from adrank.data.transforms import TransformError

#: the processor's logger, whose warnings these were before they moved here
logger = logging.getLogger("adrank.data.processor")


def numeric_values(col: pl.Series, f: NumericFeature) -> pl.Series:
    """``f``'s source column as float64 (text is parsed); a non-numeric value or dtype
    raises :class:`SchemaError` naming the column."""
    if col.dtype == pl.Utf8:
        cast = col.str.strip_chars().cast(pl.Float64, strict=False)
        bad = cast.is_null() & col.is_not_null() & (col.str.strip_chars() != "")
        if bad.any():
            idx = int(bad.arg_max())  # type: ignore[arg-type]
            raise SchemaError(
                f"numeric column {f.source or f.name!r} has non-numeric value "
                f"{col[idx]!r} at row {idx}"
            )
        return cast
    if not (col.dtype.is_numeric() or col.dtype == pl.Null or col.dtype == pl.Boolean):
        raise SchemaError(
            f"numeric column {f.source or f.name!r} has dtype {col.dtype}, expected numbers"
        )
    return col.cast(pl.Float64)


def numeric_series(name: str, values: Iterable[Any]) -> pl.Series:
    """A serving record field as float64 (``None`` and ``""`` are missing)."""
    out: list[float | None] = []
    for v in values:
        if v is None or v == "":
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise SchemaError(f"field {name!r} must be a number, got {type(v).__name__} {v!r}")
        else:
            try:
                out.append(float(v))
            except ValueError as exc:
                raise SchemaError(f"field {name!r} must be a number, got {v!r}") from exc
    return pl.Series(name, out, dtype=pl.Float64)


def fit_numeric(x: pl.Series, f: NumericFeature) -> tuple[dict[str, float], list[float] | None]:
    """The statistics (``mean``, ``std``, ``min``, ``max`` of the filled, log1p'd where
    configured, training values) and, with ``buckets``, the quantile boundaries of ``f``."""
    boundaries = None
    finite = x.filter(x.is_finite())
    if f.buckets:
        if finite.len() == 0:
            raise ValueError(f"numeric feature {f.name!r} has no finite training values")
        qs = np.quantile(finite.to_numpy(), np.linspace(0, 1, f.buckets + 1)[1:-1])
        boundaries = sorted(set(float(q) for q in qs))
    filled = x.fill_nan(None).fill_null(f.fill_value)
    filled = filled.set(~filled.is_finite(), f.fill_value)
    arr = filled.to_numpy().astype(np.float64)
    if f.normalizer == "log1p":
        arr = np.sign(arr) * np.log1p(np.abs(arr))
    stats = {
        "mean": float(arr.mean()) if arr.size else 0.0,
        "std": float(arr.std()) if arr.size else 1.0,
        "min": float(arr.min()) if arr.size else 0.0,
        "max": float(arr.max()) if arr.size else 1.0,
    }
    return stats, boundaries


def encode_numeric(
    x: pl.Series,
    f: NumericFeature,
    stats: Mapping[str, float],
    boundaries: list[float] | None,
) -> pl.Series:
    """Encode ``f``'s values ``x`` (from :func:`numeric_values`): bucket ids (missing ->
    OOV) with ``buckets``, else the normalized float32 (missing takes the fill value)."""
    infinite = x.is_infinite().fill_null(False)
    if infinite.any():  # as the file readers and the HTTP service refuse it
        row = int(infinite.arg_max())  # type: ignore[arg-type]
        raise TransformError(
            f"numeric feature {f.name!r} is {x[row]} in row {row}; a numeric value must be "
            "finite (a missing one is null, NaN or empty and takes the fill value)",
            column=f.source or f.name,
            row=row,
        )
    if f.buckets:
        # searchsorted on boundaries: id = bucket index + 2; missing -> OOV
        arr = x.fill_nan(None).to_numpy()
        ids = np.searchsorted(np.asarray(boundaries), arr, side="right")
        ids = ids.astype(np.int64) + NUM_RESERVED_IDS
        ids[~np.isfinite(arr)] = OOV_ID
        return pl.Series(f.name, ids, dtype=pl.Int64)
    arr = x.fill_nan(None).fill_null(f.fill_value).to_numpy().astype(np.float64)
    arr[~np.isfinite(arr)] = f.fill_value
    with np.errstate(over="ignore"):  # overflow to inf is handled below
        out = normalize(arr, f, stats).astype(np.float32)
    overflow = ~np.isfinite(out)
    if overflow.any():  # a finite value beyond float32 (1e39) would train and serve inf
        out[overflow] = normalize(np.array([f.fill_value], np.float64), f, stats)[0]
        logger.warning(
            "numeric feature %r: %d value(s) beyond float32's range (|x| > 3.4e38) after "
            "normalizer %r took the fill value %g; normalizer: log1p keeps such magnitudes",
            f.name, int(overflow.sum()), f.normalizer, f.fill_value,
        )  # fmt: skip
    return pl.Series(f.name, out)


def normalize(arr: np.ndarray, f: NumericFeature, stats: Mapping[str, float]) -> np.ndarray:
    """``f``'s normalizer with the training split's statistics ``stats`` (float64)."""
    if f.normalizer == "log1p":
        return np.sign(arr) * np.log1p(np.abs(arr))
    if f.normalizer == "standard":
        return (arr - stats["mean"]) / (stats["std"] if stats["std"] > 0 else 1.0)
    if f.normalizer == "minmax":
        span = stats["max"] - stats["min"]
        return (arr - stats["min"]) / (span if span > 0 else 1.0)
    return arr
