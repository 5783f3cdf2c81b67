"""The text formats of :mod:`adrank.data.readers`: CSV/TSV (a header detected or checked,
ragged rows located from the byte scan) and libFM (``label idx:val ...``). Each yields
parsed pieces of a file; :func:`~adrank.data.readers.read_raw` and
:func:`~adrank.data.readers.iter_raw_batches` assemble them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from adrank.data.readers_base import (
    MAX_EXAMPLES,
    Piece,
    ReadOptions,
    all_bad_note,
    check_unique,
    empty_to_null,
    resolve_bad_rows,
    total_note,
)
from adrank.data.text_scan import DataFormatError, gather_records, text_records

logger = logging.getLogger("adrank.data.readers")  # the readers log under one name


# ---- CSV / TSV -------------------------------------------------------------------------


def csv_pieces(
    path: Path, opts: ReadOptions, chunk_bytes: int
) -> Iterator[tuple[Piece, np.ndarray, str]]:
    quote = opts.fmt == "csv"
    quote_char = '"' if quote else None
    names: list[str] | None = None
    remaining = opts.n_rows
    n_data = 0
    header_seen = False
    for buf, rec, base in text_records(path, opts.separator, quote, chunk_bytes):
        idx = np.flatnonzero(rec.ends > rec.starts)  # blank lines are ignored
        if names is None and len(idx):
            h = int(idx[0])
            first = _parse(buf[rec.starts[h] : rec.ends[h]], path, opts, quote_char, None)
            cells = [v or "" for v in first.row(0)]
            if _first_line_is_header(cells, path, opts):
                header_seen = True
                names = [v if v else f"column_{i + 1}" for i, v in enumerate(cells)]
                check_unique(names, path, "the header")
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
            shown = pos[: MAX_EXAMPLES if opts.bad_rows == "skip" else 1]
            examples = [
                (int(lines[i]), f"line {lines[i]}: expected {len(names)} fields, got {fields[i]}")
                for i in shown
            ]
            if opts.bad_rows == "error":
                note = total_note(len(pos))
                if len(pos) == len(idx):  # no row fits the header: the separator is wrong?
                    hint = "check the separator and the header (or the given column names)"
                    note = all_bad_note(len(pos), True, hint, f"lines {lines[0]}-{lines[-1]}")
                raise DataFormatError(
                    f"{path}: {examples[0][1]} (separator {opts.separator!r}){note}"
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
        yield Piece(empty_to_null(frame), int(wrong.sum()), examples), lines, "line"
        if remaining == 0:
            break
    if names is None:
        raise DataFormatError(f"{path}: file is empty")
    if n_data == 0 and header_seen:  # declared or detected ('auto'): an empty split
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


def _first_line_is_header(cells: list[str], path: Path, opts: ReadOptions) -> bool:
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
            dupes = sorted({c for c in cells if cells.count(c) > 1})[:5]
            hint = (
                f"; if it is a header, it repeats the name(s) {dupes}: rename them"
                if dupes and looks_like_header(list(dict.fromkeys(cells)))
                else ""
            )
            raise DataFormatError(
                f"{path}: the first line ({shown}) looks like data, not a header, and no column "
                f"names were given: pass them (--columns a,b,... / column_names=){hint}"
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
    data: bytes, path: Path, opts: ReadOptions, quote_char: str | None, names: list[str] | None
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


def libfm_pieces(
    path: Path, opts: ReadOptions, chunk_bytes: int
) -> Iterator[tuple[Piece, np.ndarray, str]]:
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
) -> tuple[Piece, np.ndarray, str]:
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
    masks += [  # exactly one ':' per token: '3:1:1' is not read as '3:1'
        (
            pl.col(f"{n}__value").is_null()
            | (pl.col(n) == "")
            | (pl.col(f"__raw:{n}").str.count_matches(":", literal=True) != 1)
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
    keep, n_bad, examples = resolve_bad_rows(
        frame.with_columns(masks), checks, lines, "line", str(path), bad_rows
    )
    if keep is not None:
        frame, lines = frame.filter(pl.Series(keep)), lines[keep]
    out = [pl.when(pl.col(label) == -1).then(0.0).otherwise(pl.col(label)).alias(label)]
    out += [pl.col(n) for n in fields] + [pl.col(f"{n}__value") for n in fields]
    return Piece(frame.select(out), n_bad, examples), lines, "line"


def _describe_token(name: str, expected: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: f"column {name!r}: expected {expected}, got {r[f'__raw:{name}']!r}"


def drop_unit_values(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop ``<field>__value`` columns whose values are all 1."""
    cols = [c for c in frame.columns if c.endswith("__value")]
    if not cols or not frame.height:
        return frame.drop(cols)
    all_one = frame.select((pl.col(c) == 1.0).all() for c in cols).row(0)
    return frame.drop([c for c, one in zip(cols, all_one, strict=True) if one])
