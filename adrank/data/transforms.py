"""Declared column transforms: derived features computed from raw columns.

A schema's ``transforms`` list is applied, in order, to every raw frame the processor sees:
the training split when it is fitted, every split it encodes, and every serving request.
So a derived feature (Criteo's log² buckets, Avazu's hour of day) is computed by the same
code in training and serving, and is saved with the processor.

Example (YAML)::

    transforms:
      - {name: hour_of_day, fn: substring, input: hour, start: 6, length: 2}
      - {name: weekday, fn: datetime_part, input: hour, format: "%y%m%d%H", part: weekday}
      - {name: I1, fn: log_square_bucket, input: I1}     # in place: raw I1 -> bucket id
      - {name: user_x_item, fn: cross, input: [user, item]}

Every function is a registered, parameter-checked class (no strings become code). A
transform's output is text (categorical) unless stated. A value that cannot be transformed
(an unparsable date, a non-numeric count) raises :class:`~adrank.data.schema.SchemaError`
naming the transform, the column, the value and the row; a missing input stays missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from adrank.data.readers_base import category_text_expr
from adrank.data.schema import SchemaError

__all__ = [
    "TRANSFORMS",
    "Transform",
    "TransformError",
    "apply_transforms",
    "raw_inputs",
    "transform_from_dict",
]


class TransformError(SchemaError):
    """A transform's input is missing or holds a value it cannot use; a
    :class:`~adrank.data.schema.SchemaError` naming the ``column`` (and ``row``, if any)."""

    def __init__(self, message: str, *, column: str, row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.row = row


@dataclass(frozen=True)
class Transform:
    """Base class: ``name`` is the output column, ``input`` the raw column(s)."""

    name: str
    input: str | tuple[str, ...]
    fn: ClassVar[str] = ""
    #: what a raw input value is: ``"categorical"`` (text or integer) or ``"numeric"``
    input_kind: ClassVar[str] = "categorical"

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.input if isinstance(self.input, tuple) else (self.input,)

    def expr(self, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:  # pragma: no cover
        """The output column, given the frame's input ``dtypes``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input"] = list(self.inputs) if isinstance(self.input, tuple) else self.input
        return {"name": d.pop("name"), "fn": self.fn} | d


def _text(column: str, dtypes: Mapping[str, pl.DataType] | None) -> pl.Expr:
    """A categorical input as text: a whole float as the integer, as a request sends it
    (:func:`~adrank.data.readers_base.category_text_expr`); without ``dtypes``, cast."""
    dtype = (dtypes or {}).get(column, pl.String)
    return category_text_expr(pl.col(column), dtype)


def _number(column: str) -> pl.Expr:
    col = pl.col(column)
    return col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


@dataclass(frozen=True)
class LogSquareBucket(Transform):
    """Criteo's integer bucketing (the Kaggle winners' and BARS's): a missing value (empty,
    NaN) is 0; ``v > 2 -> floor(log(v)^2)``, else ``v``; the result is a category (text).
    Text that is not a number, and ±inf, are invalid (:meth:`invalid`)."""

    fn: ClassVar[str] = "log_square_bucket"
    input_kind: ClassVar[str] = "numeric"

    def expr(self, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
        v = _number(self.inputs[0]).fill_nan(None).fill_null(0.0)
        bucket = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v)
        return bucket.cast(pl.Int64).cast(pl.String)

    def invalid(self) -> pl.Expr:
        raw = pl.col(self.inputs[0]).cast(pl.String).str.strip_chars()
        number = _number(self.inputs[0])
        return (raw.is_not_null() & (raw != "") & number.is_null()) | number.is_infinite()


@dataclass(frozen=True)
class Substring(Transform):
    """Characters ``start .. start + length`` of the text value."""

    start: int = 0
    length: int | None = None
    fn: ClassVar[str] = "substring"

    def expr(self, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
        return _text(self.inputs[0], dtypes).str.slice(self.start, self.length)


@dataclass(frozen=True)
class DatetimePart(Transform):
    """A part of a date/time parsed with ``format`` (strftime codes): ``hour`` (0-23),
    ``weekday`` (1 = Monday .. 7), ``day``, ``month`` or ``year``; as text."""

    format: str = "%Y-%m-%d %H:%M:%S"
    part: str = "weekday"
    fn: ClassVar[str] = "datetime_part"
    PARTS: ClassVar[tuple[str, ...]] = ("hour", "weekday", "day", "month", "year")

    def __post_init__(self) -> None:
        if self.part not in self.PARTS:
            raise ValueError(f"part must be one of {list(self.PARTS)}, got {self.part!r}")

    def _parsed(self) -> pl.Expr:
        text = pl.col(self.inputs[0]).cast(pl.String).str.strip_chars()
        fmt = self.format
        if not any(code in fmt for code in ("%H", "%I", "%M", "%S", "%T", "%R")):
            return text.str.strptime(pl.Date, fmt, strict=False).cast(pl.Datetime)
        if "%M" not in fmt and "%T" not in fmt and "%R" not in fmt:
            # polars parses an hour only together with minutes: add ":00" minutes
            text, fmt = text + ":00", fmt + ":%M"
        return text.str.strptime(pl.Datetime, fmt, strict=False)

    def expr(self, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
        return getattr(self._parsed().dt, self.part)().cast(pl.String)

    def invalid(self) -> pl.Expr:
        raw = pl.col(self.inputs[0]).cast(pl.String)
        return raw.is_not_null() & (raw != "") & self._parsed().is_null()


@dataclass(frozen=True)
class Cross(Transform):
    """The inputs' text values joined by ``separator`` (a cross feature); missing if any
    input is missing."""

    separator: str = "_"
    fn: ClassVar[str] = "cross"

    def expr(self, dtypes: Mapping[str, pl.DataType] | None = None) -> pl.Expr:
        cols = [_text(c, dtypes) for c in self.inputs]
        return pl.concat_str(cols, separator=self.separator)


#: every transform function by name
TRANSFORMS: dict[str, type[Transform]] = {
    t.fn: t for t in (LogSquareBucket, Substring, DatetimePart, Cross)
}


def transform_from_dict(index: int, raw: Any) -> Transform:
    """Build and check one transform declaration (errors name the key)."""
    where = f"transforms[{index}]"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be a mapping, got {raw!r}")
    data = dict(raw)
    fn = data.pop("fn", None)
    if fn not in TRANSFORMS:
        raise SchemaError(f"{where}: unknown fn {fn!r}; expected one of {sorted(TRANSFORMS)}")
    klass = TRANSFORMS[fn]
    allowed = {f.name for f in dataclasses.fields(klass)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {unknown} for {fn}; allowed: {sorted(allowed)}")
    name, inputs = data.get("name"), data.get("input")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{where} needs a non-empty string 'name'")
    if isinstance(inputs, list) and inputs and all(isinstance(c, str) for c in inputs):
        data["input"] = tuple(inputs)
    elif not isinstance(inputs, str) or not inputs:
        raise SchemaError(f"{where} ({name!r}) needs 'input': a column name or a list of them")
    if klass is not Cross and isinstance(data["input"], tuple):
        raise SchemaError(f"{where} ({name!r}): {fn} takes one input column")
    try:
        return klass(**data)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{where} ({name!r}): {exc}") from exc


def raw_inputs(transforms: tuple[Transform, ...]) -> dict[str, str]:
    """The raw columns the transforms read (an input that another transform derives is not
    raw, unless it is the transform's own output, e.g. ``I1 -> I1``), each with its kind
    (``"numeric"`` if any transform reads it as a number, else ``"categorical"``)."""
    derived = {t.name for t in transforms}
    out: dict[str, str] = {}
    for t in transforms:
        for c in t.inputs:
            if c not in derived or c == t.name:
                out[c] = "numeric" if "numeric" in (out.get(c), t.input_kind) else "categorical"
    return out


def apply_transforms(frame: pl.DataFrame, transforms: tuple[Transform, ...]) -> pl.DataFrame:
    """``frame`` with every transform's output column added (or replaced), in order.
    Raises :class:`TransformError` for a missing input column or an unusable value."""
    for t in transforms:
        missing = [c for c in t.inputs if c not in frame.columns]
        if missing:
            raise TransformError(
                f"transform {t.name!r} ({t.fn}) needs column(s) {missing}; "
                f"available: {frame.columns}",
                column=missing[0],
            )
        invalid = getattr(t, "invalid", None)
        if invalid is not None:
            bad = frame.select(invalid().fill_null(False)).to_series()
            if bad.any():
                row = int(bad.arg_max())  # type: ignore[arg-type]
                value = frame.get_column(t.inputs[0])[row]
                raise TransformError(
                    f"transform {t.name!r} ({t.fn}) cannot use value {value!r} of column "
                    f"{t.inputs[0]!r} in row {row}",
                    column=t.inputs[0],
                    row=row,
                )
        frame = frame.with_columns(t.expr(frame.schema).alias(t.name))
    return frame
