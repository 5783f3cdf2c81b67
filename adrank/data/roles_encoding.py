"""Role columns (group, weight, position, domain, passthrough, ...: see
:data:`adrank.data.schema.ROLES`): the processed column a role gets, the vocabulary of a
``vocab`` role fitted on the training split, and encoding a role's values with their
checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from adrank.data.readers_base import TIME_EXPECTED, category_text, text_seconds
from adrank.data.schema import ROLES, SchemaError

GROUP_COLUMN = "__group__"

#: what a numeric role's values must be, where it is more than a finite number
ROLE_RULES = {
    "weight": "finite and >= 0",
    "position": "a whole number >= 1 (1 = the top slot; add 1 to 0-based positions)",
}


def role_column(role: str, source: str) -> str:
    """The processed column of a role (``__group__`` for the group, ``__meta__<col>`` for a
    passthrough column)."""
    if role == "passthrough":
        return f"__meta__{source}"
    return f"__{role}__"


def fit_role_vocab(col: pl.Series) -> list[str]:
    """Values of a ``vocab`` role (e.g. domains) by descending frequency, ties by value."""
    col = category_text(col).drop_nulls()
    counts = col.rename("value").value_counts(name="count")
    return counts.sort(["count", "value"], descending=[True, False])["value"].to_list()


def encode_role(role: str, col: pl.Series, vocab: Sequence[str]) -> pl.Series:
    """Encode a column of ``role`` by its kind: a hash, the raw text, an id in ``vocab``
    (1-based; 0 = unseen) or a checked number (a bad value raises :class:`SchemaError`
    naming the role, the column, the value and the row)."""
    spec = ROLES[role]
    if spec.kind == "hash":
        return category_text(col).hash(seed=0).reinterpret(signed=True)
    if spec.kind == "raw":
        return col.cast(pl.Utf8)
    if spec.kind == "vocab":
        ids = pl.Series(np.arange(1, len(vocab) + 1), dtype=pl.Int64)
        keys = pl.Series(vocab, dtype=pl.Utf8)
        return category_text(col).replace_strict(keys, ids, default=0, return_dtype=pl.Int64)
    raw = col  # reported as given, not as the failed cast
    if col.dtype == pl.Utf8:
        if role == "time":  # numbers or ISO-8601 text, as the file readers read it
            col = text_seconds(col)
        else:
            col = col.str.strip_chars().cast(pl.Float64, strict=False)
    elif col.dtype.is_temporal():
        col = col.cast(pl.Datetime("us")).dt.epoch("s")
    x = col.cast(pl.Float64)
    bad = x.is_null() | ~x.is_finite()
    if spec.bounds is not None:
        low, high = spec.bounds
        bad = bad | (x <= low) | (x > high)
    elif role == "weight":
        bad = bad | (x < 0)
    elif role == "position":  # 1 = the top slot; a 0 would be clipped into it in training
        bad = bad | (x < 1) | (x != x.floor())
    if bad.any():
        row = int(bad.fill_null(True).arg_max())  # type: ignore[arg-type]
        rule = ROLE_RULES.get(role, "in (0, 1]" if spec.bounds else "a finite number")
        rule = TIME_EXPECTED if role == "time" else rule
        raise SchemaError(
            f"role {role!r} (column {raw.name!r}) must be {rule}; found {raw[row]!r} in row {row}"
        )
    return x.cast(pl.Float32) if spec.kind == "float" else x.cast(pl.Int64)
