"""Scoring files with a run: reading a raw input file (:func:`read_records`) and
:func:`predict_file`, which writes the input's columns plus one column per output,
atomically and never over the input or (without ``overwrite``) an existing file. Re-exported
by :mod:`adrank.serve.predictor`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from adrank.serve.predictor import SCORE_BATCH_SIZE, Predictor

__all__ = ["OutputExistsError", "check_output_path", "predict_file", "read_records"]

logger = logging.getLogger("adrank.serve.predictor")  # the predictor's messages, as before


def read_records(
    path: Path,
    *,
    has_header: bool | str = "auto",
    column_names: list[str] | None = None,
    separator: str | None = None,
    expected: Sequence[str] = (),
) -> pl.DataFrame:
    """Read a raw input file for scoring (csv/tsv/parquet/jsonl). CSV/TSV: ``has_header``
    ``True``/``False``/``"auto"``, ``column_names`` for a file without a header (they replace
    the header's names when there is one), ``separator``. ``"auto"`` takes a first line
    holding every ``expected`` name (the model's required fields, :meth:`Predictor.read`)
    as the header, even when the names look like numbers (Ali-CCP's ``101``, ``121``);
    otherwise the reader decides from the line itself."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".ndjson"):
        return pl.read_ndjson(path, infer_schema_length=None)
    from adrank.data.readers import DataFormatError, read_raw

    if has_header == "auto" and column_names is None and expected:
        try:
            cells = read_raw(path, has_header=True, separator=separator, n_rows=1).frame.columns
        except DataFormatError:  # e.g. repeated cells: data, not a header
            cells = []
        if set(expected) <= set(cells):
            has_header = True
    return read_raw(
        path,
        has_header=has_header,  # type: ignore[arg-type]
        column_names=column_names,
        separator=separator,
    ).frame


class OutputExistsError(FileExistsError):
    """The prediction output path holds a file and ``overwrite`` was not given."""


def check_output_path(output_path: Path, input_path: Path, overwrite: bool) -> None:
    """A prediction output never replaces the input, a directory, or (without
    ``overwrite``) any existing file."""
    if output_path.is_dir():
        raise OutputExistsError(f"--output {output_path} is a directory; give a file path")
    if output_path.exists() and output_path.resolve() == input_path.resolve():
        raise OutputExistsError(f"--output {output_path} is the input file; choose another path")
    if output_path.exists() and not overwrite:
        raise OutputExistsError(
            f"--output {output_path} already exists; refusing to replace it (pass --overwrite "
            "to replace it, or choose another path)"
        )


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = SCORE_BATCH_SIZE,
    *,
    has_header: bool | str = "auto",
    column_names: list[str] | None = None,
    separator: str | None = None,
    overwrite: bool = False,
) -> tuple[int, float]:
    """Score every row of ``input_path`` (read by :func:`read_records` with the header,
    column and separator options); write its columns (pass-through metadata such as a
    request id included) plus one column per output (``Predictor.outputs``: ``pctr``, and
    ``pcvr``/``pctcvr`` for a click/conversion model) to ``output_path``, atomically (a
    temporary file renamed into place, so a failed run leaves no partial file). An existing
    ``output_path`` is refused unless ``overwrite`` (never the input itself): see
    :func:`check_output_path`. Returns (rows, seconds spent scoring)."""
    from adrank.utils import atomic_write

    output_path, input_path = Path(output_path), Path(input_path)
    check_output_path(output_path, input_path, overwrite)
    predictor = Predictor.load(run_dir, batch_size=batch_size)
    frame = predictor.read(
        input_path, has_header=has_header, column_names=column_names, separator=separator
    )
    missing = [c for c in predictor.passthrough if c not in frame.columns]
    if missing:
        logger.warning("pass-through column(s) %s are not in %s", missing, input_path)
    t0 = time.perf_counter()
    probs = predictor.predict_outputs(frame)
    seconds = time.perf_counter() - t0
    clash = [name for name in predictor.outputs if name in frame.columns]
    if clash:
        logger.warning("input column(s) %s are replaced by the model's outputs", clash)
    out = frame.with_columns([pl.Series(name, probs[name]) for name in predictor.outputs])
    check_output_path(output_path, input_path, overwrite)  # again: it may have appeared since
    if output_path.suffix == ".parquet":
        atomic_write(output_path, lambda p: out.write_parquet(p))
    else:
        atomic_write(output_path, lambda p: out.write_csv(p))
    return out.height, seconds
