"""Raw-data readers: CSV/TSV (plain or gzip), Parquet, JSON lines and libFM, with bad-input
handling.

Every reader returns raw values in a Polars frame: CSV/TSV columns are read as strings
(empty strings become null); categorical and sequence columns stay strings because the
feature processor builds its vocabularies from strings. With a :class:`Schema`, label
columns are cast to ``Float64`` and must be 0 or 1 (a regression task's label: a finite
number), numeric columns are cast strictly to ``Float64`` (empty -> null, filled later by the
processor), and the values of numeric roles (weight, time, position, propensity, examination)
are checked as the processor would (a bad value is a bad row, named by line). A ``time``
value in text may also be an ISO-8601 date/time (no offset: UTC): it is rewritten to the
Unix seconds the processor stores for a Parquet timestamp.

Malformed input raises :class:`DataFormatError` naming the file, the 1-based line (``row``
for Parquet, ``record`` for JSON lines, whose values keep their JSON types as Parquet's
do), the column, the bad value and what was expected. With ``bad_rows="skip"``
offending rows are dropped instead and counted in :attr:`ReadResult.skipped_rows`.

Text files are scanned as bytes with NumPy: one vectorized pass finds record boundaries
(newlines outside double quotes for CSV) and counts separators per record, so ragged rows
are located exactly without a per-row Python loop. Files are processed in bounded byte
chunks, which lets :func:`iter_raw_batches` stream gzip files too.

libFM lines are ``label idx:val idx:val ...``; token ``k`` of a row belongs to field ``k``.
The label ``-1`` (the format's negative class) is mapped to ``0``. Each field becomes a
String column holding the ``idx`` part; a Float64 ``<field>__value`` column is present in a
returned frame only when some value of that field in that frame differs from 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from adrank.data.readers_base import (
    ISO_DATE_START,
    MAX_EXAMPLES,
    TIME_EXPECTED,
    Piece,
    ReadOptions,
    category_text_expr,
    check_unique,
    iso_seconds,
    resolve_bad_rows,
)
from adrank.data.readers_text import csv_pieces, drop_unit_values, libfm_pieces, looks_like_header
from adrank.data.readers_typed import jsonl_pieces, parquet_pieces
from adrank.data.schema import ROLES, NumericFeature, Schema, SequenceFeature
from adrank.data.text_scan import DataFormatError

__all__ = [
    "FORMATS",
    "DataFormatError",
    "Format",
    "ReadResult",
    "check_numeric_columns",
    "detect_format",
    "iter_raw_batches",
    "looks_like_header",
    "read_raw",
    "validate_frame",
]

logger = logging.getLogger(__name__)

Format = Literal["csv", "tsv", "parquet", "libfm", "jsonl"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "libfm", "jsonl")
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".libfm": "libfm",
    ".libsvm": "libfm",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_CHUNK_BYTES = 64 << 20  # text is scanned and parsed in pieces of about this size


@dataclass
class ReadResult:
    """Raw rows read from one file (or one batch of it).

    Attributes:
        frame: raw values, one column per file column.
        source: the file read.
        skipped_rows: rows dropped under ``bad_rows="skip"``.
        skipped_examples: up to 5 short descriptions, e.g. ``"line 17: expected 11 fields,
            got 9"``.
    """

    frame: pl.DataFrame
    source: Path
    skipped_rows: int = 0
    skipped_examples: list[str] = field(default_factory=list)


def detect_format(path: str | Path) -> Format:
    """Format from the file suffix, ignoring a trailing ``.gz`` (``.txt`` means TSV)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataFormatError(
            f"{path}: cannot tell the format from the suffix {''.join(suffixes) or '(none)'!r};"
            f" known suffixes: {sorted(_SUFFIXES)} (optionally + '.gz'); rename the file with"
            f" one of them (in Python: pass fmt= one of {list(FORMATS)})"
        )
    return fmt


# ---- public entry points ---------------------------------------------------------------


def read_raw(
    path: str | Path,
    *,
    fmt: str | None = None,
    separator: str | None = None,
    has_header: bool | Literal["auto"] = True,
    column_names: list[str] | None = None,
    schema: Schema | None = None,
    bad_rows: Literal["error", "skip"] = "error",
    n_rows: int | None = None,
) -> ReadResult:
    """Read a whole CSV/TSV/Parquet/JSON-lines/libFM file into one frame.

    Args:
        fmt: override the suffix-based :func:`detect_format`.
        separator: CSV/TSV field separator (one character); default ``,`` for csv and tab for
            tsv. CSV supports standard double-quote quoting; TSV has no quoting.
        has_header: whether the first CSV/TSV line names the columns; ``"auto"`` decides from
            the line itself (see :func:`looks_like_header`) and logs the decision. A line
            declared a header that looks like data is refused with a message saying so.
        column_names: column names; required for CSV/TSV without header (they replace the
            header names when there is one; empty header cells are named ``column_<i>``).
            libFM: ``["label", field1, field2, ...]`` (default ``label, field_1..field_K``
            sized from the first line). Parquet: renames the file's columns.
        schema: check that its columns exist and cast labels/numeric columns strictly.
        bad_rows: ``"error"`` raises :class:`DataFormatError` on the first bad row (wrong
            field counts are checked before values); ``"skip"`` drops bad rows and counts them.
        n_rows: read at most this many data rows from the start of the file (skipped rows
            count towards it).
    """
    path, opts = _prepare(path, fmt, separator, has_header, column_names, schema, bad_rows, n_rows)
    pieces = list(_pieces(path, opts, batch_rows=None, chunk_bytes=_CHUNK_BYTES))
    examples = [e for p in pieces for e in p.examples]
    skipped = sum(p.skipped for p in pieces)
    return _result([p.frame for p in pieces], path, opts, skipped, examples, whole=True)


def iter_raw_batches(
    path: str | Path,
    *,
    batch_rows: int = 1_000_000,
    chunk_bytes: int | None = None,
    fmt: str | None = None,
    separator: str | None = None,
    has_header: bool | Literal["auto"] = True,
    column_names: list[str] | None = None,
    schema: Schema | None = None,
    bad_rows: Literal["error", "skip"] = "error",
    n_rows: int | None = None,
    numeric: Sequence[str] = (),
) -> Iterator[ReadResult]:
    """Stream a file as frames of exactly ``batch_rows`` rows (the last may be shorter).

    Parquet is read batch by batch from its row groups; text files (gzip included) are read
    in byte chunks of about ``chunk_bytes`` (default 64 MiB), so memory stays bounded. Other
    arguments are as in :func:`read_raw`. ``skipped_rows`` of a batch counts the rows dropped
    while it was being filled; an all-skipped file yields one empty batch.

    ``numeric``: columns checked as a schema's numeric features are (text that is not a
    number, or ±inf, is a bad row named by line; empty and NaN are missing), without a schema,
    so without its labels and roles: input to score (:func:`adrank.serve.predict_file`). The
    values are checked, not cast; a listed column the file lacks is not checked.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path, opts = _prepare(path, fmt, separator, has_header, column_names, schema, bad_rows, n_rows)
    pieces = _pieces(
        path, opts, batch_rows=batch_rows, chunk_bytes=chunk_bytes or _CHUNK_BYTES, numeric=numeric
    )
    parts: list[pl.DataFrame] = []
    filled, skipped, examples, emitted = 0, 0, [], False
    empty: pl.DataFrame | None = None
    for piece in pieces:
        skipped += piece.skipped
        examples += piece.examples
        frame, empty = piece.frame, piece.frame.clear()
        while frame.height:
            take = min(batch_rows - filled, frame.height)
            parts.append(frame.slice(0, take))
            frame, filled = frame.slice(take), filled + take
            if filled == batch_rows:
                yield _result(parts, path, opts, skipped, examples)
                parts, filled, skipped, examples, emitted = [], 0, 0, [], True
    if filled or skipped or not emitted:
        yield _result(parts or [empty], path, opts, skipped, examples, whole=not emitted)


def validate_frame(
    frame: pl.DataFrame,
    schema: Schema,
    source: str | Path,
    bad_rows: Literal["error", "skip"] = "error",
    line_offset: int = 2,
) -> tuple[pl.DataFrame, int, list[str]]:
    """Check ``frame`` against ``schema``; return ``(frame, n_skipped, examples)``.

    Every ``schema.source_columns()`` must exist. Labels are cast to Float64 and must be 0
    or 1, or a finite number for a regression task (null -> "missing label"); numeric
    columns are cast strictly to Float64 (empty/NaN -> null, text or inf -> bad); the values
    of numeric roles are checked; categorical/sequence scalars are cast to String. Other
    columns are kept. Row ``i`` is reported as line ``i + line_offset``.
    """
    _check_bad_rows(bad_rows)
    lines = np.arange(frame.height, dtype=np.int64) + line_offset
    piece = _check_schema(frame, schema, str(source), bad_rows, lines, "line")
    return piece.frame, piece.skipped, [text for _, text in piece.examples]


def check_numeric_columns(
    frame: pl.DataFrame,
    columns: Sequence[str],
    source: str | Path,
    lines: np.ndarray,
    unit: str = "line",
    bad_rows: Literal["error", "skip"] = "error",
) -> tuple[pl.DataFrame, int, list[str]]:
    """Check ``columns`` of ``frame`` as a schema's numeric features are checked (the
    ``numeric`` option of :func:`iter_raw_batches`, for a frame already read); return
    ``(frame, n_skipped, examples)``. Row ``i`` is reported as ``f"{unit} {lines[i]}"``;
    values are not cast, and a column ``frame`` lacks is not checked."""
    _check_bad_rows(bad_rows)
    piece = _check_numeric(frame, columns, str(source), bad_rows, lines, unit)
    return piece.frame, piece.skipped, [text for _, text in piece.examples]


# ---- shared plumbing -------------------------------------------------------------------


def _prepare(
    path: str | Path,
    fmt: str | None,
    separator: str | None,
    has_header: bool | Literal["auto"],
    column_names: list[str] | None,
    schema: Schema | None,
    bad_rows: str,
    n_rows: int | None,
) -> tuple[Path, ReadOptions]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    _check_bad_rows(bad_rows)
    if n_rows is not None and n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    sep = separator if separator is not None else ("\t" if fmt == "tsv" else ",")
    if fmt in ("csv", "tsv"):
        if len(sep) != 1 or ord(sep) > 127 or sep in '"\r\n':
            raise ValueError(f"separator must be one ASCII character, not quote/newline: {sep!r}")
        if has_header not in (True, False, "auto"):
            raise ValueError(f"has_header must be true, false or 'auto', got {has_header!r}")
        if has_header is False and column_names is None:
            raise ValueError(
                f"{path}: a file without a header needs its column names (--columns a,b,...)"
            )
    if column_names is not None:
        check_unique(list(column_names), path, "column_names")
    names = list(column_names) if column_names is not None else None
    return path, ReadOptions(fmt, sep, has_header, names, schema, bad_rows, n_rows)


def _check_bad_rows(bad_rows: str) -> None:
    if bad_rows not in ("error", "skip"):
        raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")


def _pieces(
    path: Path,
    opts: ReadOptions,
    batch_rows: int | None,
    chunk_bytes: int,
    numeric: Sequence[str] = (),
) -> Iterator[Piece]:
    """Parsed pieces of the file, each validated against the schema when one is given (and
    its ``numeric`` columns checked, see :func:`iter_raw_batches`)."""
    if opts.fmt == "parquet":
        raw = parquet_pieces(path, opts, batch_rows)
    elif opts.fmt == "jsonl":
        raw = jsonl_pieces(path, opts, batch_rows)
    elif opts.fmt == "libfm":
        raw = libfm_pieces(path, opts, chunk_bytes)
    else:
        raw = csv_pieces(path, opts, chunk_bytes)
    for piece, lines, unit in raw:
        if opts.schema is not None:
            checked = _check_schema(piece.frame, opts.schema, str(path), opts.bad_rows, lines, unit)
            examples = sorted(piece.examples + checked.examples)
            piece = Piece(checked.frame, piece.skipped + checked.skipped, examples)
        if numeric:
            checked = _check_numeric(piece.frame, numeric, str(path), opts.bad_rows, lines, unit)
            examples = sorted(piece.examples + checked.examples)
            piece = Piece(checked.frame, piece.skipped + checked.skipped, examples)
        if piece.skipped:
            logger.debug("%s: skipped %d bad rows in a piece", path, piece.skipped)
        yield piece


def _result(
    parts: list[pl.DataFrame],
    path: Path,
    opts: ReadOptions,
    skipped: int,
    examples: list,
    whole: bool = False,
) -> ReadResult:
    """A :class:`ReadResult` of ``parts``, logging the skipped rows (``whole``: the parts
    are every row read from the file, so an empty frame means that every row was bad)."""
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical", rechunk=True)
    if opts.fmt == "libfm":
        frame = drop_unit_values(frame)
    shown = [text for _, text in sorted(examples)[:MAX_EXAMPLES]]
    if skipped and whole and frame.height == 0:  # skipping bad rows left nothing
        logger.warning(
            "%s: skipped %d bad rows: every row read was bad, so none is left. That is a "
            "wrong format (a column's values, the separator or the schema), not a few bad "
            "rows: correct the file or the schema. E.g. %s",
            path, skipped, "; ".join(shown),
        )  # fmt: skip
    elif skipped:
        logger.warning(
            "%s: skipped %d bad row%s, e.g. %s",
            path, skipped, "" if skipped == 1 else "s", "; ".join(shown),
        )  # fmt: skip
    return ReadResult(frame, path, skipped, shown)


# ---- schema checks ---------------------------------------------------------------------


def _check_schema(
    frame: pl.DataFrame, schema: Schema, source: str, bad_rows: str, lines: np.ndarray, unit: str
) -> Piece:
    missing = [c for c in schema.source_columns() if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{source}: columns {missing} required by the schema are missing;"
            f" available columns: {frame.columns}{_separator_hint(frame.columns)}"
        )
    raw_columns = set(schema.source_columns())  # not the columns transforms derive
    numeric = [f.source or f.name for f in schema.features if isinstance(f, NumericFeature)]
    numeric = [c for c in numeric if c in raw_columns]
    strings = [f.source or f.name for f in schema.features if not isinstance(f, NumericFeature)]
    strings = [c for c in strings if c in raw_columns]
    masks: list[pl.Expr] = []
    casts: list[pl.Expr] = []
    checks: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    # a regression task's label is a real number; every other label (and `given`) is 0/1
    binary = {t.label for t in schema.tasks if t.type == "binary"}
    binary |= {t.given for t in schema.tasks if t.given is not None}
    for col in dict.fromkeys(schema.labels):
        raw, value = _as_float(frame, col, source)
        if col in binary:
            bad, expected = value.is_null() | ~value.is_in([0.0, 1.0]), "a label 0 or 1"
        else:
            bad, expected = value.is_null() | value.is_infinite(), "a finite number label"
        masks += [
            raw.is_null().alias(f"__missing:{col}"),
            (raw.is_not_null() & bad).alias(f"__label:{col}"),
        ]
        casts.append(value.alias(col))
        checks += [
            (f"__missing:{col}", _describe_missing(col, expected)),
            (f"__label:{col}", _describe_bad(col, expected)),
        ]
    number_masks, number_casts, number_checks = _numeric_checks(
        frame, [c for c in numeric if c not in schema.labels], source
    )
    masks, casts, checks = masks + number_masks, casts + number_casts, checks + number_checks
    # a transform's numeric input (Criteo's I1..I13): checked the same, not cast (another
    # transform may read it as text)
    inputs = numeric_transform_inputs(schema)
    number_masks, _, number_checks = _numeric_checks(
        frame, [c for c in inputs if c not in numeric and c not in schema.labels], source
    )
    masks, checks = masks + number_masks, checks + number_checks
    sequences = {f.source or f.name for f in schema.features if isinstance(f, SequenceFeature)}
    for col in dict.fromkeys(c for c in strings if c not in numeric and c not in schema.labels):
        dtype = frame.schema[col]
        nested = isinstance(dtype, (pl.List, pl.Array))
        if isinstance(dtype, pl.Struct) or (nested and col not in sequences):
            raise DataFormatError(
                f"{source}: column {col!r} has dtype {dtype}; a categorical feature needs one "
                "scalar value (a string or a number) per row"
            )
        if dtype != pl.String and not nested:
            casts.append(category_text_expr(pl.col(col), dtype).alias(col))
    iso_time: tuple[str, pl.Expr, pl.Expr] | None = None  # (column, is ISO, seconds)
    for role, col in schema.roles.items():
        spec = ROLES[role]
        if spec.kind not in ("float", "int") or col in schema.labels:
            continue
        if frame.schema[col].is_temporal() and role == "time":
            continue  # a timestamp: the processor stores it as Unix seconds
        raw, value = _as_float(frame, col, source)
        is_text = role == "time" and frame.schema[col] == pl.String
        if is_text and frame.select(pl.col(col).str.contains(ISO_DATE_START).any()).item():
            # a value that starts like a date: an ISO-8601 date/time becomes Unix seconds
            # (parsed once here, as the expressions below use the seconds several times)
            seconds = pl.lit(iso_seconds(frame.get_column(col)))
            iso_time = (col, value.is_null() & seconds.is_not_null(), seconds)
            value = pl.coalesce(value, seconds.cast(pl.Float64))
        bad = value.is_null() | value.is_infinite()
        if spec.bounds is not None:
            bad = bad | (value <= spec.bounds[0]) | (value > spec.bounds[1])
            expected = f"a number in ({spec.bounds[0]:g}, {spec.bounds[1]:g}]"
        elif role == "weight":
            bad, expected = bad | (value < 0), "a finite number >= 0"
        elif role == "position":
            bad = bad | (value < 1) | (value != value.floor())
            expected = "a whole number >= 1 (1 = the top slot; add 1 to 0-based positions)"
        elif role == "time":
            expected = TIME_EXPECTED
        else:
            expected = "a finite number"
        masks.append(raw.is_null().alias(f"__role_missing:{role}"))
        masks.append((raw.is_not_null() & bad).alias(f"__role:{role}"))
        what = f"role {role!r} needs {expected}"
        checks.append((f"__role_missing:{role}", _describe_missing_role(col, what)))
        checks.append((f"__role:{role}", _describe_bad(col, expected, f" (role {role!r})")))
    if iso_time is not None:
        masks.append(iso_time[1].alias("__iso:time"))
    probe = frame.with_columns(masks) if masks else frame
    if iso_time is not None:
        col, is_iso, seconds = iso_time
        _check_iso_time_unshared(probe, schema, col, source, lines, unit)
        as_seconds = pl.when(is_iso).then(seconds.cast(pl.String)).otherwise(pl.col(col))
        casts.append(as_seconds.alias(col))  # the processor reads the seconds as it reads numbers
    keep, n_bad, examples = resolve_bad_rows(probe, checks, lines, unit, source, bad_rows)
    out = frame.with_columns(casts) if casts else frame
    if keep is not None:
        out = out.filter(pl.Series(keep))
    return Piece(out, n_bad, examples)


def _check_iso_time_unshared(
    probe: pl.DataFrame, schema: Schema, col: str, source: str, lines: np.ndarray, unit: str
) -> None:
    """Refuse ISO-8601 times in the ``time`` role's column when a feature, a transform or
    another role reads that column too: the reader gives the role Unix seconds by rewriting
    the column, which would change what those read (and serving sends them the text)."""
    readers = [f"feature {f.name!r}" for f in schema.features if (f.source or f.name) == col]
    readers += [f"transform {t.name!r}" for t in schema.transforms if col in t.inputs]
    readers += [
        f"role {r!r}"
        for r, c in schema.roles.items()
        if r != "time" and (c == col or (isinstance(c, tuple) and col in c))
    ]
    found = probe.get_column("__iso:time")
    if not readers or not found.any():
        return
    i = int(found.arg_max())  # type: ignore[arg-type]
    raise DataFormatError(
        f"{source}: {unit} {int(lines[i])}: column {col!r} (role 'time') holds an ISO-8601 "
        f"date/time, {probe.get_column(col)[i]!r}, and {', '.join(readers)} also read(s) "
        "that column; the time role needs it as Unix seconds, which would change what they "
        "read. Give the time role a column of its own (a copy of the column), or write the "
        "times as Unix seconds"
    )


def numeric_transform_inputs(schema: Schema) -> list[str]:
    """The raw columns the schema's transforms read as numbers (``log_square_bucket``'s)."""
    from adrank.data.transforms import raw_inputs

    return [c for c, kind in raw_inputs(schema.transforms).items() if kind == "numeric"]


def _numeric_checks(
    frame: pl.DataFrame, columns: Sequence[str], source: str
) -> tuple[list[pl.Expr], list[pl.Expr], list[tuple[str, Callable[[dict[str, Any]], str]]]]:
    """``(masks, casts, checks)`` of numeric feature ``columns``: text that is not a number,
    and ±inf, are bad (empty and NaN are missing); the casts give Float64 values."""
    masks: list[pl.Expr] = []
    casts: list[pl.Expr] = []
    checks: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    for col in dict.fromkeys(columns):
        if frame.schema[col] == pl.String:  # _as_float's values, in a third of its time
            text = pl.col(col).str.strip_chars()
            number = text.cast(pl.Float64, strict=False)
            not_a_number, value = number.is_null() & (text != ""), number.fill_nan(None)
        else:
            raw, value = _as_float(frame, col, source)
            number, not_a_number = value, raw.is_not_null() & value.is_null()
        masks.append(not_a_number.alias(f"__number:{col}"))
        masks.append(number.is_infinite().alias(f"__finite:{col}"))
        casts.append(value.alias(col))
        checks.append((f"__number:{col}", _describe_bad(col, "a number")))
        checks.append((f"__finite:{col}", _describe_bad(col, "a finite number")))
    return masks, casts, checks


def _check_numeric(
    frame: pl.DataFrame,
    columns: Sequence[str],
    source: str,
    bad_rows: str,
    lines: np.ndarray,
    unit: str,
) -> Piece:
    """:func:`_numeric_checks` of the ``columns`` ``frame`` has, without the casts."""
    present = [c for c in columns if c in frame.columns]
    masks, _, checks = _numeric_checks(frame, present, source)
    if not masks:
        return Piece(frame)
    probe = frame.with_columns(masks)
    keep, n_bad, examples = resolve_bad_rows(probe, checks, lines, unit, source, bad_rows)
    return Piece(frame if keep is None else frame.filter(pl.Series(keep)), n_bad, examples)


def _separator_hint(columns: list[str]) -> str:
    """A hint when the file was read as one column whose name holds another separator."""
    if len(columns) != 1:
        return ""
    found = [sep for sep in (";", "\t", "|", ",") if sep in columns[0]]
    if not found:
        return ""
    shown = "\\t" if found[0] == "\t" else found[0]
    return f"; the file reads as one column: is its separator '{shown}'? (--separator)"


def _as_float(frame: pl.DataFrame, col: str, source: str) -> tuple[pl.Expr, pl.Expr]:
    """``(raw, value)``: raw is null where the cell is empty/NaN; value is the Float64 cast."""
    if frame.schema[col] == pl.String:
        stripped = pl.col(col).str.strip_chars()
        raw = pl.when(stripped == "").then(None).otherwise(stripped)
        value = raw.cast(pl.Float64, strict=False)
        nan = value.is_nan()
        return pl.when(nan).then(None).otherwise(raw), pl.when(nan).then(None).otherwise(value)
    dtype = frame.schema[col]
    wrong = DataFormatError(
        f"{source}: column {col!r} has dtype {dtype}; expected numbers or strings"
    )
    if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)):
        raise wrong  # a date, a list, ...: never read as a number silently
    try:
        value = pl.col(col).cast(pl.Float64)
        frame.select(value.head(1))
    except pl.exceptions.PolarsError as exc:
        raise wrong from exc
    value = value.fill_nan(None)
    return value, value


def _describe_missing(col: str, expected: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: f"column {col!r}: missing label (expected {expected})"


def _describe_missing_role(col: str, what: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: f"column {col!r}: missing value ({what})"


def _describe_bad(col: str, expected: str, note: str = "") -> Callable[[dict[str, Any]], str]:
    return lambda row: f"column {col!r}{note}: expected {expected}, got {row[col]!r}"


# ---- Parquet ---------------------------------------------------------------------------
