"""Behaviour histories from an event log: per row, the same user's events strictly before
the row's time (``adrank histories``, docs/sequences.md).

Events sharing a user and a time are never in each other's history: the file order of
simultaneous events says nothing about which came first, and using it leaks the label.
:func:`past_events` works on sorted arrays; :func:`add_histories` takes a frame in any
order, checks it and returns it in its own order with the history columns added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from adrank.data.readers_base import TIME_EXPECTED, category_text, text_seconds

__all__ = ["HistoryError", "add_histories", "past_events"]


class HistoryError(ValueError):
    """The log cannot give histories as asked (a column is missing, a value is unusable)."""


def past_events(
    users: np.ndarray,
    times: np.ndarray,
    sequences: Mapping[str, Sequence[str] | np.ndarray],
    max_len: int,
    delimiter: str = "|",
    where: np.ndarray | None = None,
) -> dict[str, list[str]]:
    """Per row, the values of each sequence at the same user's rows with a strictly smaller
    time, oldest first, the most recent ``max_len`` kept, joined by ``delimiter``.

    The rows must be sorted by ``(user, time)``. ``where`` (a boolean per row) keeps only
    those rows' events in the histories (e.g. clicks); every row still gets its history.
    """
    if max_len < 1:
        raise HistoryError(f"max_len must be at least 1, got {max_len}")
    n = len(users)
    starts = np.ones(n, dtype=bool)  # first row of each (user, time) block
    user_starts = np.ones(n, dtype=bool)
    if n:
        user_starts[1:] = users[1:] != users[:-1]
        starts[1:] = user_starts[1:] | (times[1:] != times[:-1])
    block = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    user_block = np.maximum.accumulate(np.where(user_starts, np.arange(n), 0))
    keep = np.ones(n, dtype=bool) if where is None else np.asarray(where, dtype=bool)
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept events in rows [0, i)
    hi = kept_before[block]
    lo = np.maximum(kept_before[user_block], hi - max_len)
    out: dict[str, list[str]] = {}
    for name, seq in sequences.items():
        values = np.asarray(seq)[keep].astype(str).tolist()
        out[name] = [
            delimiter.join(values[a:b]) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
        ]
    return out


def _times(col: pl.Series) -> pl.Series:
    """A time column as numbers: Unix seconds for dates and ISO-8601 text."""
    if col.dtype.is_float():
        bad = col.is_null() | ~col.is_finite()
    elif col.dtype.is_numeric():
        bad = col.is_null()
    elif col.dtype.is_temporal():
        col = col.cast(pl.Datetime("us")).dt.epoch("s")
        bad = col.is_null()
    else:  # text: numbers (a CSV read as text) or ISO-8601 date/times
        col = text_seconds(col.cast(pl.Utf8))
        bad = col.is_null() | ~col.is_finite().fill_null(False)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise HistoryError(
            f"time column {col.name!r}: row {row} is missing or not a time; expected "
            f"{TIME_EXPECTED}"
        )
    return col


def add_histories(
    frame: pl.DataFrame,
    *,
    user: str,
    time: str,
    columns: Sequence[str],
    max_len: int = 50,
    positive: str | None = None,
    prefix: str = "hist_",
    delimiter: str = "|",
) -> pl.DataFrame:
    """``frame`` (in its own row order) with a history column ``PREFIX + c`` for each of
    ``columns``: the user's events strictly before the row's ``time``, oldest first, at most
    ``max_len``, joined by ``delimiter``. The columns after the first are aligned with it
    (one value per event). With ``positive`` (a 0/1 label column) only the events where it
    is 1 enter the histories. ``time`` may be numbers, dates or ISO-8601 text.

    Raises :class:`HistoryError` naming the column (and row) for a missing column, a
    missing user or time, a missing history value (fill it first, or the aligned
    histories would pair the wrong events), a value holding the delimiter, or an output
    column that exists already."""
    if not columns:
        raise HistoryError("give at least one column to collect (the item id first)")
    repeated = sorted({c for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise HistoryError(f"column(s) {repeated} are given more than once; give each once")
    needed = [user, time, *columns, *([positive] if positive else [])]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise HistoryError(f"column(s) {missing} are not in the log; it has {frame.columns}")
    names = [f"{prefix}{c}" for c in columns]
    taken = [n for n in names if n in frame.columns]
    if taken:
        raise HistoryError(f"the log already has column(s) {taken}; pick another --prefix")
    if frame.get_column(user).null_count():
        row = int(frame.get_column(user).is_null().arg_true()[0])
        raise HistoryError(f"user column {user!r}: row {row} has no user")
    work = frame.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        pl.col(user).rank("dense").alias("_user"),
        _times(frame.get_column(time)).alias("_time"),
        *(category_text(frame.get_column(c)).alias(f"_v{i}") for i, c in enumerate(columns)),
    )
    for i, c in enumerate(columns):
        values = work.get_column(f"_v{i}")
        bad = values.is_null() | values.str.contains(delimiter, literal=True).fill_null(False)
        if bad.any():
            row = int(bad.arg_true()[0])
            what = "is missing" if values[row] is None else f"holds the delimiter {delimiter!r}"
            raise HistoryError(
                f"column {c!r}: the value in row {row} {what} ({int(bad.sum())} row(s) like it); "
                "fill or clean it first (a history is one token per event)"
            )
    keep = None
    if positive:
        label = frame.get_column(positive)
        if label.dtype == pl.Utf8:  # a CSV read as text
            label = label.str.strip_chars().cast(pl.Int64, strict=False)
        if label.dtype == pl.Boolean:
            ok = label.is_not_null()
        elif label.dtype.is_numeric():
            ok = label.is_in([0, 1]).fill_null(False)
        else:
            ok = pl.repeat(False, label.len(), eager=True)
        if not ok.all():
            row = int((~ok).arg_true()[0])
            raise HistoryError(f"--positive column {positive!r}: row {row} is not 0 or 1")
        work = work.with_columns(label.cast(pl.Boolean).alias("_keep"))
    work = work.sort("_user", "_time", maintain_order=True)
    if positive:
        keep = work.get_column("_keep").to_numpy()
    hist = past_events(
        work.get_column("_user").to_numpy(),
        work.get_column("_time").to_numpy(),
        {name: work.get_column(f"_v{i}").to_numpy() for i, name in enumerate(names)},
        max_len,
        delimiter,
        where=keep,
    )
    order = np.argsort(work.get_column("_row").to_numpy(), kind="stable")
    return frame.with_columns(
        pl.Series(name, np.asarray(values, dtype=object)[order].tolist(), dtype=pl.Utf8)
        for name, values in hist.items()
    )
