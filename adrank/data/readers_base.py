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

    Returns ``(keep_mask or None, n_bad, examples)``; raises in ``"error"`` mode (when every
    row is bad, the message says the format is wrong instead of offering to skip rows).
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
    failed = ""
    for i in first:
        row = frame.row(int(i), named=True)
        failed, describe = next((c, describe) for c, describe in checks if row[c])
        examples.append((int(lines[i]), f"{unit} {int(lines[i])}: {describe(row)}"))
    if bad_rows == "error":
        note = total_note(n_bad)
        if n_bad == frame.height:  # nothing is good: a format, not a few rows, is wrong
            same = bool(frame.select(pl.col(failed).fill_null(False).all()).item())
            note = all_bad_note(n_bad, same, span=f"{unit}s {lines[0]}-{lines[-1]}")
        raise DataFormatError(f"{source}: {examples[0][1]}{note}")
    return ~bad, n_bad, examples


def total_note(n_bad: int) -> str:
    """The closing note of a bad-row error: the count, and that skipping bad rows would drop
    them (worded for the command line and for Python alike)."""
    return f" ({n_bad} bad row(s) in total; bad-rows mode 'skip' would drop them)"


def all_bad_note(n_rows: int, same: bool, hint: str = "", span: str = "") -> str:
    """The closing note of a bad-row error when every row read is bad: skipping would drop
    them all, so it names the format, not the rows (``same``: every row fails the check
    shown; ``hint``: what to check, when known; ``span``: where the rows are, ``lines
    2-9``)."""
    if n_rows == 1:  # one bad value says little about the column's format
        return f" (the only row read{': ' + hint if hint else ''})"
    rows = f"all {n_rows} rows read" + (f", {span}," if span else "")
    if same:
        hint = hint or "the column is not in the expected format: convert it, or correct the schema"
        return f" ({rows} fail this way: {hint})"
    hint = hint or "check the file against the schema: its columns, separator and value formats"
    return f" ({rows} are bad: {hint})"


#: an ISO-8601 date, or date and time (RFC 3339 included): ``2023-11-14``,
#: ``2023-11-14T22:17``, ``2023-11-14T22:17:42.5Z``, ``2023-11-14 22:17:42+05:30``
ISO_TIME = (
    r"^(?<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?<hm>\d{2}:\d{2})(?<sec>:\d{2}(?:[.,]\d+)?)?"
    r"(?<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?$"
)
#: how a value that may be an ISO-8601 date/time starts (a number never does)
ISO_DATE_START = r"^\s*\d{4}-\d{2}-\d{2}"
#: what a ``time`` role value may be, for messages
TIME_EXPECTED = (
    "a finite number (e.g. Unix seconds) or an ISO-8601 date/time (2023-11-14T22:17:42Z)"
)


def text_seconds(text: pl.Series) -> pl.Series:
    """Float64 seconds of time values given as text: a number (Unix seconds; a CSV read as
    text) or an ISO-8601 date/time (:func:`iso_seconds`); null where a value is neither.
    The processor's ``time`` role and ``adrank histories`` read text times with it."""
    numbers = text.str.strip_chars().cast(pl.Float64, strict=False)
    iso = iso_seconds(text).cast(pl.Float64)
    return pl.select(pl.coalesce(numbers, iso)).to_series().alias(text.name)


def iso_seconds(text: pl.Series) -> pl.Series:
    """Integer Unix seconds (Int64) of ISO-8601 date/time strings; null where a value is
    not one (or is not a real date/time, such as month 13).

    A value without an offset is UTC, and a date alone is its midnight UTC. The seconds are
    the processor's for a Parquet timestamp column (``cast(Datetime("us")).dt.epoch("s")``:
    whole seconds, fractions rounded down), so a time read from text and one read from
    Parquet are the same number. Vectorized: one regex and one ``strptime``."""
    parts = text.str.strip_chars().str.extract_groups(ISO_TIME).struct.unnest()
    zone = pl.col("zone")
    zone = (
        pl.when(zone.is_null() | (zone.str.to_uppercase() == "Z"))
        .then(pl.lit("+00:00"))
        .when(zone.str.len_chars() == 3)
        .then(zone + ":00")
        .otherwise(zone)
    )
    canonical = pl.concat_str(
        pl.col("date"),
        pl.lit("T"),
        pl.col("hm").fill_null("00:00"),
        pl.col("sec").fill_null(":00").str.replace(",", ".", literal=True),
        zone,
    )
    parsed = canonical.str.strptime(
        pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%z", strict=False
    )
    seconds = parts.select(parsed.cast(pl.Datetime("us")).dt.epoch("s").alias(text.name))
    return seconds.to_series()
