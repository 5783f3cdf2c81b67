"""Plumbing shared by the raw-data readers of :mod:`adrank.data.readers`: the parsed piece
of a file, the read options, and finding bad rows (raise, or drop and describe them).
Import the readers from :mod:`adrank.data.readers`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from adrank.data.schema import Schema
from adrank.data.text_scan import DataFormatError

MAX_EXAMPLES = 5


@dataclass
class Piece:
    """A parsed, validated slice of a file; ``examples`` are ``(line, text)`` pairs."""

    frame: pl.DataFrame
    skipped: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ReadOptions:
    fmt: str
    separator: str
    has_header: bool | Literal["auto"]
    column_names: list[str] | None
    schema: Schema | None
    bad_rows: str
    n_rows: int | None


def category_text_expr(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A categorical column's values as text, the way a serving request's values read.

    A float column whose value is a whole number reads as the integer (``1.0`` -> ``"1"``):
    pandas writes an integer id column with missing values as floats, and the same id sent
    in a request (``1``) or read from CSV (``1``) must find the same vocabulary entry, not
    the unseen id. NaN is missing; other floats keep their text (``"0.5"``)."""
    if not dtype.is_float():
        return expr.cast(pl.String)
    whole = expr.is_finite() & (expr == expr.floor()) & (expr.abs() < 2.0**53)
    return (
        pl.when(expr.is_nan())
        .then(None)
        .when(whole)
        .then(expr.cast(pl.Int64).cast(pl.String))
        .otherwise(expr.cast(pl.String))
    )


def category_text(col: pl.Series) -> pl.Series:
    """:func:`category_text_expr` of a Series (same name)."""
    if not col.dtype.is_float():
        return col.cast(pl.String)
    text = category_text_expr(pl.col(col.name), col.dtype).alias(col.name)
    return col.to_frame().select(text).to_series()


def check_unique(names: list[str], path: Path, what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataFormatError(f"{path}: duplicate column names in {what}: {dupes}")


def empty_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = [
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    ]
    return frame.with_columns(exprs) if exprs else frame


def resolve_bad_rows(
    frame: pl.DataFrame,
    checks: list[tuple[str, Callable[[dict[str, Any]], str]]],
    lines: np.ndarray,
    unit: str,
    source: str,
    bad_rows: str,
) -> tuple[np.ndarray | None, int, list[tuple[int, str]]]:
    """Find rows where any boolean check column is true.

    Returns ``(keep_mask or None, n_bad, examples)``; raises in ``"error"`` mode.
    ``checks`` pairs a mask column with a function describing the row's problem.
    """
    if not checks:
        return None, 0, []
    any_bad = pl.any_horizontal([pl.col(c).fill_null(False) for c, _ in checks])
    bad = frame.select(any_bad.alias("bad")).to_series().to_numpy()
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None, 0, []
    first = np.flatnonzero(bad)[: MAX_EXAMPLES if bad_rows == "skip" else 1]
    examples = []
    for i in first:
        row = frame.row(int(i), named=True)
        text = next(describe(row) for c, describe in checks if row[c])
        examples.append((int(lines[i]), f"{unit} {int(lines[i])}: {text}"))
    if bad_rows == "error":
        raise DataFormatError(f"{source}: {examples[0][1]}{total_note(n_bad)}")
    return ~bad, n_bad, examples


def total_note(n_bad: int) -> str:
    return f" ({n_bad} bad row(s) in total; --bad-rows skip (bad_rows='skip') drops them)"
