"""Raw-data readers: CSV/TSV (plain or gzip), Parquet and libFM, with bad-input handling.

Every reader returns raw values in a Polars frame: CSV/TSV columns are read as strings
(empty strings become null); categorical and sequence columns stay strings because the
feature processor builds its vocabularies from strings. With a :class:`Schema`, label
columns are cast to ``Float64`` and must be 0 or 1, and numeric columns are cast strictly to
``Float64`` (empty -> null, filled later by the processor).

Malformed input raises :class:`DataFormatError` naming the file, the 1-based line (``row``
for Parquet), the column, the bad value and what was expected. With ``bad_rows="skip"``
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.schema import NumericFeature, Schema
from adrank.data.text_scan import (
    DataFormatError,
    gather_records,
    text_records,
)

logger = logging.getLogger(__name__)

Format = Literal["csv", "tsv", "parquet", "libfm"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "libfm")
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".libfm": "libfm",
    ".libsvm": "libfm",
}
_CHUNK_BYTES = 64 << 20  # text is scanned and parsed in pieces of about this size
_MAX_EXAMPLES = 5


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


@dataclass
class _Piece:
    """A parsed, validated slice of a file; ``examples`` are ``(line, text)`` pairs."""

    frame: pl.DataFrame
    skipped: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Options:
    fmt: str
    separator: str
    has_header: bool | Literal["auto"]
    column_names: list[str] | None
    schema: Schema | None
    bad_rows: str
    n_rows: int | None


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
    """Read a whole CSV/TSV/Parquet/libFM file into one frame.

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
    return _result([p.frame for p in pieces], path, opts, skipped, examples)


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
) -> Iterator[ReadResult]:
    """Stream a file as frames of exactly ``batch_rows`` rows (the last may be shorter).

    Parquet is read batch by batch from its row groups; text files (gzip included) are read
    in byte chunks of about ``chunk_bytes`` (default 64 MiB), so memory stays bounded. Other
    arguments are as in :func:`read_raw`. ``skipped_rows`` of a batch counts the rows dropped
    while it was being filled; an all-skipped file yields one empty batch.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path, opts = _prepare(path, fmt, separator, has_header, column_names, schema, bad_rows, n_rows)
    pieces = _pieces(path, opts, batch_rows=batch_rows, chunk_bytes=chunk_bytes or _CHUNK_BYTES)
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
        yield _result(parts or [empty], path, opts, skipped, examples)


def validate_frame(
    frame: pl.DataFrame,
    schema: Schema,
    source: str | Path,
    bad_rows: Literal["error", "skip"] = "error",
    line_offset: int = 2,
) -> tuple[pl.DataFrame, int, list[str]]:
    """Check ``frame`` against ``schema``; return ``(frame, n_skipped, examples)``.

    Every ``schema.source_columns()`` must exist. Labels are cast to Float64 and must be 0
    or 1 (null -> "missing label"); numeric columns are cast strictly to Float64 (empty/NaN
    -> null, text or inf -> bad); categorical/sequence scalars are cast to String. Other
    columns are kept. Row ``i`` is reported as line ``i + line_offset``.
    """
    _check_bad_rows(bad_rows)
    lines = np.arange(frame.height, dtype=np.int64) + line_offset
    piece = _check_schema(frame, schema, str(source), bad_rows, lines, "line")
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
) -> tuple[Path, _Options]:
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
        _check_unique(list(column_names), path, "column_names")
    names = list(column_names) if column_names is not None else None
    return path, _Options(fmt, sep, has_header, names, schema, bad_rows, n_rows)


def _check_bad_rows(bad_rows: str) -> None:
    if bad_rows not in ("error", "skip"):
        raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")


def _check_unique(names: list[str], path: Path, what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataFormatError(f"{path}: duplicate column names in {what}: {dupes}")


def _pieces(
    path: Path, opts: _Options, batch_rows: int | None, chunk_bytes: int
) -> Iterator[_Piece]:
    """Parsed pieces of the file, each validated against the schema when one is given."""
    if opts.fmt == "parquet":
        raw = _parquet_pieces(path, opts, batch_rows)
    elif opts.fmt == "libfm":
        raw = _libfm_pieces(path, opts, chunk_bytes)
    else:
        raw = _csv_pieces(path, opts, chunk_bytes)
    for piece, lines, unit in raw:
        if opts.schema is not None:
            checked = _check_schema(piece.frame, opts.schema, str(path), opts.bad_rows, lines, unit)
            examples = sorted(piece.examples + checked.examples)
            piece = _Piece(checked.frame, piece.skipped + checked.skipped, examples)
        if piece.skipped:
            logger.warning("%s: skipped %d bad rows", path, piece.skipped)
        yield piece


def _result(
    parts: list[pl.DataFrame], path: Path, opts: _Options, skipped: int, examples: list
) -> ReadResult:
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical", rechunk=True)
    if opts.fmt == "libfm":
        frame = _drop_unit_values(frame)
    shown = [text for _, text in sorted(examples)[:_MAX_EXAMPLES]]
    if skipped:
        logger.warning(
            "%s: skipped %d bad row(s) (bad_rows='skip'), e.g. %s", path, skipped, "; ".join(shown)
        )
    return ReadResult(frame, path, skipped, shown)


def _empty_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = [
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    ]
    return frame.with_columns(exprs) if exprs else frame


def _resolve(
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
    first = np.flatnonzero(bad)[: _MAX_EXAMPLES if bad_rows == "skip" else 1]
    examples = []
    for i in first:
        row = frame.row(int(i), named=True)
        text = next(describe(row) for c, describe in checks if row[c])
        examples.append((int(lines[i]), f"{unit} {int(lines[i])}: {text}"))
    if bad_rows == "error":
        raise DataFormatError(f"{source}: {examples[0][1]}{_total(n_bad)}")
    return ~bad, n_bad, examples


def _total(n_bad: int) -> str:
    return f" ({n_bad} bad row(s) in total; --bad-rows skip (bad_rows='skip') drops them)"


# ---- schema checks ---------------------------------------------------------------------


def _check_schema(
    frame: pl.DataFrame, schema: Schema, source: str, bad_rows: str, lines: np.ndarray, unit: str
) -> _Piece:
    missing = [c for c in schema.source_columns() if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{source}: columns {missing} required by the schema are missing;"
            f" available columns: {frame.columns}"
        )
    raw_columns = set(schema.source_columns())  # not the columns transforms derive
    numeric = [f.source or f.name for f in schema.features if isinstance(f, NumericFeature)]
    numeric = [c for c in numeric if c in raw_columns]
    strings = [f.source or f.name for f in schema.features if not isinstance(f, NumericFeature)]
    strings = [c for c in strings if c in raw_columns]
    masks: list[pl.Expr] = []
    casts: list[pl.Expr] = []
    checks: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    for col in dict.fromkeys(schema.labels):
        raw, value = _as_float(frame, col, source)
        masks += [
            raw.is_null().alias(f"__missing:{col}"),
            (raw.is_not_null() & (value.is_null() | ~value.is_in([0.0, 1.0]))).alias(
                f"__label:{col}"
            ),
        ]
        casts.append(value.alias(col))
        checks += [
            (f"__missing:{col}", _describe_missing(col)),
            (f"__label:{col}", _describe_bad(col, "a label 0 or 1")),
        ]
    for col in dict.fromkeys(c for c in numeric if c not in schema.labels):
        raw, value = _as_float(frame, col, source)
        masks.append((raw.is_not_null() & value.is_null()).alias(f"__number:{col}"))
        masks.append(value.is_infinite().alias(f"__finite:{col}"))
        casts.append(value.alias(col))
        checks.append((f"__number:{col}", _describe_bad(col, "a number")))
        checks.append((f"__finite:{col}", _describe_bad(col, "a finite number")))
    for col in dict.fromkeys(c for c in strings if c not in numeric and c not in schema.labels):
        dtype = frame.schema[col]
        if dtype != pl.String and not isinstance(dtype, (pl.List, pl.Array)):
            casts.append(pl.col(col).cast(pl.String))
    probe = frame.with_columns(masks) if masks else frame
    keep, n_bad, examples = _resolve(probe, checks, lines, unit, source, bad_rows)
    out = frame.with_columns(casts) if casts else frame
    if keep is not None:
        out = out.filter(pl.Series(keep))
    return _Piece(out, n_bad, examples)


def _as_float(frame: pl.DataFrame, col: str, source: str) -> tuple[pl.Expr, pl.Expr]:
    """``(raw, value)``: raw is null where the cell is empty/NaN; value is the Float64 cast."""
    if frame.schema[col] == pl.String:
        stripped = pl.col(col).str.strip_chars()
        raw = pl.when(stripped == "").then(None).otherwise(stripped)
        value = raw.cast(pl.Float64, strict=False)
        nan = value.is_nan()
        return pl.when(nan).then(None).otherwise(raw), pl.when(nan).then(None).otherwise(value)
    try:
        value = pl.col(col).cast(pl.Float64)
        frame.select(value.head(1))
    except pl.exceptions.PolarsError as exc:
        raise DataFormatError(
            f"{source}: column {col!r} has dtype {frame.schema[col]}; expected numbers or strings"
        ) from exc
    value = value.fill_nan(None)
    return value, value


def _describe_missing(col: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: f"column {col!r}: missing label (expected 0 or 1)"


def _describe_bad(col: str, expected: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: f"column {col!r}: expected {expected}, got {row[col]!r}"


# ---- CSV / TSV -------------------------------------------------------------------------


def _csv_pieces(
    path: Path, opts: _Options, chunk_bytes: int
) -> Iterator[tuple[_Piece, np.ndarray, str]]:
    quote = opts.fmt == "csv"
    quote_char = '"' if quote else None
    names: list[str] | None = None
    remaining = opts.n_rows
    n_data = 0
    for buf, rec, base in text_records(path, opts.separator, quote, chunk_bytes):
        idx = np.flatnonzero(rec.ends > rec.starts)  # blank lines are ignored
        if names is None and len(idx):
            h = int(idx[0])
            first = _parse(buf[rec.starts[h] : rec.ends[h]], path, opts, quote_char, None)
            cells = [v or "" for v in first.row(0)]
            if _first_line_is_header(cells, path, opts):
                names = [v if v else f"column_{i + 1}" for i, v in enumerate(cells)]
                _check_unique(names, path, "the header")
                idx = idx[1:]
                if opts.column_names is not None:
                    if len(opts.column_names) != len(names):
                        raise DataFormatError(
                            f"{path}: column_names has {len(opts.column_names)} names but the"
                            f" header has {len(names)} columns: {names}"
                        )
                    names = opts.column_names
            else:
                names = opts.column_names
        if names is None:
            continue
        n_data += len(idx)
        if remaining is not None:
            idx, remaining = idx[:remaining], remaining - min(remaining, len(idx))
        lines = rec.lines[idx] + base + 1
        fields = rec.fields[idx] if rec.fields is not None else np.ones(len(idx), np.int64)
        wrong = fields != len(names)
        examples: list[tuple[int, str]] = []
        if wrong.any():
            pos = np.flatnonzero(wrong)
            shown = pos[: _MAX_EXAMPLES if opts.bad_rows == "skip" else 1]
            examples = [
                (int(lines[i]), f"line {lines[i]}: expected {len(names)} fields, got {fields[i]}")
                for i in shown
            ]
            if opts.bad_rows == "error":
                raise DataFormatError(
                    f"{path}: {examples[0][1]} (separator {opts.separator!r}){_total(len(pos))}"
                )
            idx, lines = idx[~wrong], lines[~wrong]
        if len(idx):
            frame = _parse(gather_records(buf, rec, idx), path, opts, quote_char, names)
            if frame.height != len(idx):
                raise DataFormatError(
                    f"{path}: parsed {frame.height} rows where {len(idx)} records were found"
                    f" between lines {int(lines[0])} and {int(lines[-1])}; check the quoting"
                )
        else:
            frame = pl.DataFrame(schema=dict.fromkeys(names, pl.String))
        yield _Piece(_empty_to_null(frame), int(wrong.sum()), examples), lines, "line"
        if remaining == 0:
            break
    if names is None:
        raise DataFormatError(f"{path}: file is empty")
    if n_data == 0 and opts.has_header is True:
        raise DataFormatError(f"{path}: file has a header but no rows")


def looks_like_header(cells: list[str], expected: list[str] | None = None) -> bool:
    """Whether a first line names columns: it holds every ``expected`` name (the schema's or
    the given column names) when those are known; otherwise its cells are distinct, none is
    empty, and fewer than half of them are numbers."""
    if expected:
        return set(expected) <= set(cells)
    if not cells or len(set(cells)) != len(cells) or not all(c.strip() for c in cells):
        return False
    return sum(_is_number(c) for c in cells) * 2 < len(cells)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line_is_header(cells: list[str], path: Path, opts: _Options) -> bool:
    """Decide (``auto``) or check (``True``) that the first line is a header."""
    shown = ", ".join(repr(c) for c in cells[:4]) + (", ..." if len(cells) > 4 else "")
    if opts.has_header == "auto":
        expected = list(opts.column_names or ())
        if not expected and opts.schema is not None:
            expected = opts.schema.source_columns()
        header = looks_like_header(cells, expected or None)
        if not header and opts.column_names is None and expected:
            # a header that lacks some schema columns is still a header (the missing columns
            # are named by the schema check); data rarely looks like distinct names
            header = looks_like_header(cells)
        if not header and opts.column_names is None:
            raise DataFormatError(
                f"{path}: the first line ({shown}) looks like data, not a header, and no column "
                "names were given: pass them (--columns a,b,... / column_names=)"
            )
        logger.info("%s: first line (%s) %s", path, shown, "is a header" if header else "is data")
        return header
    if opts.has_header and len(set(cells)) != len(cells):
        dupes = sorted({c for c in cells if cells.count(c) > 1})[:5]
        raise DataFormatError(
            f"{path}: duplicate column names in the header {dupes} (first line: {shown}); if "
            "that line is data, the file has no header: say so (--no-header / "
            "has_header=False, or 'auto') and give the column names (--columns)"
        )
    if opts.has_header and opts.column_names is None and opts.schema is not None:
        expected = opts.schema.source_columns()
        if not looks_like_header(cells, expected) and not looks_like_header(cells):
            raise DataFormatError(
                f"{path}: the first line ({shown}) looks like data, not a header with the "
                f"schema's columns {expected[:5]}; if the file has no header, say so "
                "(--no-header / has_header=False, or 'auto') and give the column names (--columns)"
            )
    return bool(opts.has_header)


def _parse(
    data: bytes, path: Path, opts: _Options, quote_char: str | None, names: list[str] | None
) -> pl.DataFrame:
    try:
        return pl.read_csv(
            data,
            has_header=False,
            new_columns=names,
            separator=opts.separator,
            quote_char=quote_char,
            infer_schema=False,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        raise DataFormatError(f"{path}: cannot parse as {opts.fmt}: {exc}") from exc


# ---- libFM -----------------------------------------------------------------------------


def _libfm_pieces(
    path: Path, opts: _Options, chunk_bytes: int
) -> Iterator[tuple[_Piece, np.ndarray, str]]:
    names = opts.column_names
    remaining = opts.n_rows
    seen_any = False
    for buf, rec, base in text_records(path, None, False, chunk_bytes):
        offsets = np.concatenate([rec.starts, rec.spans[-1:]]).astype(np.int64)
        arr = pa.LargeStringArray.from_buffers(
            len(rec.starts), pa.py_buffer(offsets), pa.py_buffer(buf)
        )
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise DataFormatError(f"{path}: not valid UTF-8 text: {exc}") from exc
        text = pl.DataFrame(
            {"_line": pl.Series(arr), "_no": rec.lines + base + 1},
        ).with_columns(pl.col("_line").str.strip_chars())
        text = text.filter(pl.col("_line") != "")
        seen_any = seen_any or text.height > 0
        if names is None and text.height:
            n_fields = len(text["_line"][0].split())
            names = ["label"] + [f"field_{k}" for k in range(1, n_fields)]
        if names is None:
            continue
        if remaining is not None:
            text, remaining = text.head(remaining), remaining - min(remaining, text.height)
        if text.height and text["_line"].str.contains(r"\s\s|[^ \S]").any():
            text = text.with_columns(pl.col("_line").str.replace_all(r"\s+", " "))
        yield _libfm_frame(text, names, path, opts.bad_rows)
        if remaining == 0:
            break
    if not seen_any:
        raise DataFormatError(f"{path}: file is empty")


def _libfm_frame(
    text: pl.DataFrame, names: list[str], path: Path, bad_rows: str
) -> tuple[_Piece, np.ndarray, str]:
    label, fields = names[0], names[1:]
    raw = [f"__raw:{n}" for n in names]
    tok = pl.col("_line").str.split(" ")
    frame = text.select(tok.list.len().alias("__n"), tok.list.to_struct(raw).alias("_s"))
    frame = frame.unnest("_s")
    # fast path: a field whose tokens all end in ":1" (one-hot data) needs no float parsing
    ones = (
        frame.select(pl.col(c).str.ends_with(":1").all() for c in raw[1:]).row(0) if fields else ()
    )
    exprs = [
        (pl.col("__n") != len(names)).alias("__count"),
        pl.col(raw[0]).cast(pl.Float64, strict=False).alias(label),
    ]
    for name, col, one in zip(fields, raw[1:], ones, strict=True):
        if one:
            idx, val = pl.col(col).str.strip_suffix(":1"), pl.lit(1.0)
        else:
            parts = pl.col(col).str.split_exact(":", 1)
            idx = parts.struct.field("field_0")
            val = parts.struct.field("field_1").cast(pl.Float64, strict=False)
        exprs += [idx.alias(name), val.alias(f"{name}__value")]
    frame = frame.with_columns(exprs)
    masks = [(pl.col(label).is_null() | pl.col(label).is_nan()).alias(f"__bad:{label}")]
    masks += [
        (
            pl.col(f"{n}__value").is_null()
            | (pl.col(n) == "")
            | pl.col(n).str.contains(":", literal=True)
        ).alias(f"__bad:{n}")
        for n in fields
    ]
    n_names = len(names)
    checks: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("__count", lambda r: f"expected {n_names} tokens (label + {n_names - 1} fields), "
         f"got {r['__n']}"),
        (f"__bad:{label}", _describe_token(label, "a number")),
    ]  # fmt: skip
    checks += [(f"__bad:{n}", _describe_token(n, "a token 'idx:val'")) for n in fields]
    lines = text["_no"].to_numpy()
    keep, n_bad, examples = _resolve(
        frame.with_columns(masks), checks, lines, "line", str(path), bad_rows
    )
    if keep is not None:
        frame, lines = frame.filter(pl.Series(keep)), lines[keep]
    out = [pl.when(pl.col(label) == -1).then(0.0).otherwise(pl.col(label)).alias(label)]
    out += [pl.col(n) for n in fields] + [pl.col(f"{n}__value") for n in fields]
    return _Piece(frame.select(out), n_bad, examples), lines, "line"


def _describe_token(name: str, expected: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"column {name!r}: expected {expected}, got {r[f'__raw:{name}']!r}"


def _drop_unit_values(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop ``<field>__value`` columns whose values are all 1."""
    cols = [c for c in frame.columns if c.endswith("__value")]
    if not cols or not frame.height:
        return frame.drop(cols)
    all_one = frame.select((pl.col(c) == 1.0).all() for c in cols).row(0)
    return frame.drop([c for c, one in zip(cols, all_one, strict=True) if one])


# ---- Parquet ---------------------------------------------------------------------------


def _parquet_pieces(
    path: Path, opts: _Options, batch_rows: int | None
) -> Iterator[tuple[_Piece, np.ndarray, str]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    _check_unique(names, path, "the Parquet schema")
    if pf.metadata.num_rows == 0:
        raise DataFormatError(f"{path}: file is empty (0 rows)")
    rename = None
    if opts.column_names is not None:
        if len(opts.column_names) != len(names):
            raise DataFormatError(
                f"{path}: column_names has {len(opts.column_names)} names but the file has"
                f" {len(names)} columns: {names}"
            )
        rename = dict(zip(names, opts.column_names, strict=True))
    remaining = opts.n_rows if opts.n_rows is not None else pf.metadata.num_rows
    if batch_rows is None:
        frames: Iterator[pl.DataFrame] = iter([pl.read_parquet(path, n_rows=remaining)])
    else:
        batches = pf.iter_batches(batch_size=batch_rows)
        frames = (pl.DataFrame(pl.from_arrow(b)) for b in batches)
    row = 0
    for frame in frames:
        frame = frame.head(remaining)
        remaining -= frame.height
        if rename:
            frame = frame.rename(rename)
        rows = np.arange(row, row + frame.height, dtype=np.int64) + 1
        row += frame.height
        yield _Piece(_empty_to_null(frame)), rows, "row"
        if remaining <= 0:
            break
