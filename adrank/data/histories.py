"""History (sequence) columns: the checked join of list histories into delimited text, the
items of each row, the aligned-history length rule and the fixed-length padding of encoded
items. Used by :class:`~adrank.data.processor.FeatureProcessor` and the serving Predictor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from adrank.data.readers_base import category_text
from adrank.data.schema import Schema, SequenceFeature
from adrank.data.transforms import TransformError


def history_text(col: pl.Series, delimiter: str) -> pl.Series:
    """A history column as delimited text: a list column (Parquet, a frame in code) is
    joined with the field's delimiter, as the service joins a request's lists. Items must
    be strings or integers and hold neither the delimiter (joined, one id would become
    several), nor a null, nor be empty (it would drop out, and an aligned history's items
    would pair with the wrong events): a :class:`TransformError` names the column and row."""
    if not isinstance(col.dtype, pl.List | pl.Array):
        return category_text(col)  # one id per row as a number (pandas' float ids: 1.0 -> "1")
    inner = col.dtype.inner
    if not (inner == pl.Utf8 or inner == pl.Categorical or inner.is_integer() or inner == pl.Null):
        raise TransformError(
            f"history {col.name!r} holds lists of {inner}; expected a delimited string or "
            "a list of strings or integers",
            column=col.name,
        )
    items = col.cast(pl.List(pl.Utf8))
    holds = items.list.eval(pl.element().str.contains(delimiter, literal=True))
    for bad, what in (
        (holds, "holds the delimiter"),
        (items.list.eval(pl.element().is_null()), "is null"),
        (items.list.eval(pl.element() == ""), "is empty"),
    ):
        hits = bad.list.any().fill_null(False)
        if hits.any():
            row = int(hits.arg_true()[0])
            raise TransformError(
                f"history {col.name!r}: an item in row {row} {what} ({delimiter!r} separates "
                "items); give each id as its own list item",
                column=col.name,
                row=row,
            )
    return items.list.join(delimiter)


def history_items(col: pl.Series, delimiter: str) -> pl.Series:
    """A history column as a list of items per row (see :func:`history_text`). Empty tokens
    ("a||b", "") are not items."""
    text = history_text(col, delimiter)
    return text.str.split(delimiter).list.eval(pl.element().filter(pl.element() != ""))


def item_counts(items: pl.Series) -> np.ndarray:
    """Items per row of :func:`history_items` lists (int64; a null row has none)."""
    return items.list.len().fill_null(0).to_numpy().astype(np.int64)


def check_aligned(schema: Schema, frame: pl.DataFrame) -> None:
    """Refuse rows of ``frame`` whose aligned histories (a sequence of ``schema`` with
    ``aligned_with``, and that history) hold different numbers of items; a pair ``frame``
    does not hold both columns of is skipped. Raises :class:`TransformError` naming the
    column and the row."""
    for f in schema.features:
        if not isinstance(f, SequenceFeature) or not f.aligned_with:
            continue
        other = schema.feature(f.aligned_with)
        mine, theirs = f.source or f.name, other.source or other.name
        if mine not in frame.columns or theirs not in frame.columns:
            continue  # encoded apart (a served user history): checked where both are
        theirs_delimiter = getattr(other, "delimiter", f.delimiter)
        for column, delimiter in ((mine, f.delimiter), (theirs, theirs_delimiter)):
            _check_no_gaps(frame.get_column(column), delimiter)
        a = item_counts(history_items(frame.get_column(mine), f.delimiter))
        b = item_counts(history_items(frame.get_column(theirs), theirs_delimiter))
        bad = np.flatnonzero(a != b)
        if bad.size:
            row = int(bad[0])
            raise TransformError(
                f"history {mine!r} has {a[row]} item(s) in row {row} but {theirs!r}, which "
                f"it is aligned with, has {b[row]}: aligned histories give one value per "
                "event, so their lengths must match",
                column=mine,
                row=row,
            )


def _check_no_gaps(col: pl.Series, delimiter: str) -> None:
    """An aligned history's text holds no empty item (``"a||b"``, ``"a|b|"``): dropped, it
    would pair the items after it with the wrong events."""
    if isinstance(col.dtype, pl.List | pl.Array):
        return  # list items were checked by history_text
    text = history_text(col, delimiter)
    tokens = text.str.split(delimiter)
    gaps = (text != "") & tokens.list.eval(pl.element() == "").list.any()
    gaps = gaps.fill_null(False)
    if gaps.any():
        row = int(gaps.arg_true()[0])
        raise TransformError(
            f"history {col.name!r}: row {row} has an empty item ({text[row]!r}); an aligned "
            f"history pairs items by position, so every item must be given ({delimiter!r} "
            "separates items)",
            column=col.name,
            row=row,
        )


def list_item_problem(items: Sequence[Any], delimiter: str) -> tuple[int, str] | None:
    """The first item of a list history (a request's list) that cannot be one id, as
    ``(index, reason)``; None when every item is a non-empty string or an integer without
    the delimiter (:func:`history_text`'s rule for one value)."""
    for i, item in enumerate(items):
        if item is None:
            return i, "is null"
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return i, f"is a {type(item).__name__}; expected a string or an integer"
        if isinstance(item, str):
            if item == "":
                return i, "is empty"
            if delimiter in item:
                return i, f"holds the delimiter {delimiter!r}"
    return None


def text_has_gaps(text: str, delimiter: str) -> bool:
    """Whether a non-empty history text holds an empty item (see :func:`check_aligned`)."""
    return text != "" and "" in text.split(delimiter)


def pad_items(flat_ids: np.ndarray, lengths: np.ndarray, max_len: int, padding: str) -> np.ndarray:
    """Rows of ids (``flat_ids``, ``lengths[i]`` of them for row ``i``) as an int64
    ``(rows, max_len)`` array: the last ``max_len`` items of each row, padded with 0 on the
    ``padding`` side (``"left"`` or ``"right"``)."""
    n = lengths.size
    row_of = np.repeat(np.arange(n), lengths)
    # position of each item within its row, counted from the end (0 = last item)
    ends = np.cumsum(lengths)
    from_end = ends[row_of] - 1 - np.arange(len(flat_ids))
    keep_mask = from_end < max_len
    out = np.zeros((n, max_len), dtype=np.int64)
    kept_len = np.minimum(lengths, max_len)
    if padding == "left":
        cols = max_len - 1 - from_end[keep_mask]
    else:
        cols = kept_len[row_of[keep_mask]] - 1 - from_end[keep_mask]
    out[row_of[keep_mask], cols] = flat_ids[keep_mask]
    return out
