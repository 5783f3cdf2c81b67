"""Typed raw files: Parquet and JSON lines. Their values keep their types (numbers,
strings, lists for histories), so they are read as frames and checked like a frame in code;
bad rows are named by ``row`` (Parquet) or ``record`` (JSON lines), 1-based. Used by
:mod:`adrank.data.readers`."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.readers_base import Piece, ReadOptions, check_unique, empty_to_null
from adrank.data.text_scan import DataFormatError


def parquet_pieces(
    path: Path, opts: ReadOptions, batch_rows: int | None
) -> Iterator[tuple[Piece, np.ndarray, str]]:
    """A Parquet file's rows as pieces of ``batch_rows`` (None: one piece), numbered by
    ``row``."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    check_unique(names, path, "the Parquet schema")
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
        yield Piece(empty_to_null(frame)), rows, "row"
        if remaining <= 0:
            break


def jsonl_pieces(
    path: Path, opts: ReadOptions, batch_rows: int | None
) -> Iterator[tuple[Piece, np.ndarray, str]]:
    """A JSON-lines file (one object per line; ``.gz`` too) read whole, then cut into
    pieces of ``batch_rows`` (None: one piece), numbered by ``record``."""
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                frame = pl.read_ndjson(handle.read(), infer_schema_length=None)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, EOFError) as exc:
        raise DataFormatError(
            f"{path}: not a readable JSON-lines file (one JSON object per line): {exc}"
        ) from exc
    check_unique(frame.columns, path, "the JSON records")
    if frame.height == 0:
        raise DataFormatError(f"{path}: file is empty (0 records)")
    if opts.column_names is not None:
        if len(opts.column_names) != frame.width:
            raise DataFormatError(
                f"{path}: column_names has {len(opts.column_names)} names but the records "
                f"have {frame.width} fields: {frame.columns}"
            )
        frame = frame.rename(dict(zip(frame.columns, opts.column_names, strict=True)))
    if opts.n_rows is not None:
        frame = frame.head(opts.n_rows)
    step = batch_rows or max(frame.height, 1)
    for start in range(0, frame.height, step):
        piece = frame.slice(start, step)
        records = np.arange(start + 1, start + 1 + piece.height, dtype=np.int64)
        yield Piece(empty_to_null(piece)), records, "record"
