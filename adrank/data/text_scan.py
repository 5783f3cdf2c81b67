"""Vectorized byte-level scanning of delimited text (CSV/TSV/libFM lines).

One NumPy pass over a byte buffer finds record boundaries (newlines outside double quotes
for CSV) and counts separators per record, so ragged rows are located exactly without a
per-row Python loop. Files are read in bounded byte chunks (plain or gzip), which lets the
readers stream large files.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"


class DataFormatError(ValueError):
    """Raised for malformed input data; the message names file, line, column and value."""


class Records(NamedTuple):
    """Record layout of a byte buffer: record ``i`` spans ``starts[i]:spans[i]`` (with its
    newline); its content ends at ``ends[i]`` (no ``\\r\\n``)."""

    starts: np.ndarray
    spans: np.ndarray
    ends: np.ndarray
    lines: np.ndarray  # 0-based physical line of each record start, within the buffer
    fields: np.ndarray | None  # separators outside quotes + 1
    consumed: int  # bytes covered by complete records


def scan_records(buf: bytes, sep: str | None, quote: bool, final: bool) -> Records:
    """Vectorized record/field scan. Non-final buffers keep their trailing partial record."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    is_nl = arr == 10
    outside = None
    if quote and b'"' in buf:
        # quote parity: a byte is inside a quoted field when an odd number of quotes precede it
        outside = np.bitwise_xor.accumulate((arr == 34).view(np.uint8)) == 0
        newlines = np.flatnonzero(is_nl & outside)
    else:
        newlines = np.flatnonzero(is_nl)
    size = len(arr)
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    spans = np.concatenate([newlines + 1, [size]]).astype(np.int64)
    if not final or starts[-1] == size:  # drop the partial (or empty) tail
        starts, spans = starts[:-1], spans[:-1]
    consumed = int(spans[-1]) if len(spans) else 0
    if final and outside is not None and not outside[-1] and len(starts):
        raise UnterminatedQuote(int(starts[-1]))
    ends = spans - (arr[spans - 1] == 10) if len(spans) else spans.copy()
    ends -= (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    if outside is not None and len(newlines) != int(is_nl[:consumed].sum()):
        lines = np.searchsorted(np.flatnonzero(is_nl), starts, side="left").astype(np.int64)
    else:
        lines = np.arange(len(starts), dtype=np.int64)
    fields = None
    if sep is not None:
        is_sep = arr[:consumed] == ord(sep)
        if outside is not None:
            is_sep &= outside[:consumed]
        fields = np.add.reduceat(is_sep, starts, dtype=np.int64) + 1 if len(starts) else starts
    return Records(starts, spans, ends, lines, fields, consumed)


class UnterminatedQuote(Exception):
    def __init__(self, offset: int) -> None:
        self.offset = offset


def byte_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == _GZIP_MAGIC
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as fh:
            first = True
            while chunk := fh.read(chunk_bytes):
                if first and chunk.startswith(b"\xef\xbb\xbf"):
                    chunk = chunk[3:]  # UTF-8 byte-order mark
                first = False
                yield chunk
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read/decompress: {exc}") from exc


def text_records(
    path: Path, sep: str | None, quote: bool, chunk_bytes: int
) -> Iterator[tuple[bytes, Records, int]]:
    """Yield ``(buffer, records, line_base)`` for complete records, chunk by chunk."""
    carry, base = b"", 0
    try:
        for raw in byte_chunks(path, chunk_bytes):
            buf = carry + raw if carry else raw
            rec = scan_records(buf, sep, quote, final=False)
            if rec.consumed == 0:
                carry = buf
                continue
            yield buf, rec, base
            base += buf.count(b"\n", 0, rec.consumed)
            carry = buf[rec.consumed :]
        if carry:
            yield carry, scan_records(carry, sep, quote, final=True), base
    except UnterminatedQuote as exc:
        line = base + carry.count(b"\n", 0, exc.offset) + 1
        raise DataFormatError(f"{path}: line {line}: unterminated quoted field") from None


def gather_records(buf: bytes, rec: Records, idx: np.ndarray) -> bytes:
    """Bytes of the records ``idx`` (sorted), each with its own newline."""
    if not len(idx):
        return b""
    lo, hi = int(rec.starts[idx[0]]), int(rec.spans[idx[-1]])
    if idx[-1] - idx[0] + 1 == len(idx) and np.all(rec.ends[idx] > rec.starts[idx]):
        return buf[lo:hi]
    marks = np.zeros(len(buf) + 1, dtype=np.int8)
    marks[rec.starts[idx]] += 1
    marks[rec.spans[idx]] -= 1
    keep = np.cumsum(marks[:-1], dtype=np.int8).astype(bool)
    return np.frombuffer(buf, dtype=np.uint8)[keep].tobytes()
