"""Scoring files with a run: reading a raw input file (:func:`read_records`,
:func:`iter_records`) and :func:`predict_file`, which streams the input in batches of
:data:`READ_ROWS` rows and writes its columns plus one column per output, in the format
the output's suffix names (:data:`OUTPUT_FORMATS`), atomically and never over the input or
(without ``overwrite``) an existing file. Re-exported by :mod:`adrank.serve.predictor`.

:func:`predict_file` checks its input as ``adrank prepare`` checks training files: a
numeric feature's value that is not a number or is ±inf is refused naming the file, the
line (``row`` for Parquet, ``record`` for JSON lines) and the value (empty and NaN are
missing values and take the feature's fill value, as in training), and every numeric
feature's column must be present (no row is skipped: the output has one row per input
row)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl

from adrank.data.readers_base import total_note
from adrank.data.schema import NumericFeature
from adrank.data.text_scan import DataFormatError
from adrank.serve.predictor import SCORE_BATCH_SIZE, Predictor, RecordError

__all__ = [
    "OUTPUT_FORMATS",
    "OutputExistsError",
    "check_output_path",
    "iter_records",
    "output_format",
    "predict_file",
    "read_records",
]

logger = logging.getLogger("adrank.serve.predictor")  # the predictor's messages, as before

#: Rows of the input read, scored and written at a time by :func:`predict_file` (rounded up
#: to a multiple of its ``batch_size``, so the model sees the same batches as on the whole
#: file): memory stays bounded by the batch, not the file.
READ_ROWS = 262_144
#: Output suffix (case-insensitive) -> format written by :func:`predict_file`.
OUTPUT_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def _resolve_header(
    path: Path,
    has_header: bool | str,
    column_names: list[str] | None,
    separator: str | None,
    expected: Sequence[str],
) -> bool | str:
    """``"auto"`` -> True when the first line holds every ``expected`` name (see
    :func:`read_records`); otherwise ``has_header`` unchanged."""
    from adrank.data.readers import DataFormatError, read_raw

    if has_header == "auto" and column_names is None and expected:
        try:
            cells = read_raw(path, has_header=True, separator=separator, n_rows=1).frame.columns
        except DataFormatError:  # e.g. repeated cells: data, not a header
            cells = []
        if set(expected) <= set(cells):
            return True
    return has_header


def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return bool(suffixes) and suffixes[-1] in (".jsonl", ".ndjson")


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
    if _is_jsonl(path):
        return pl.read_ndjson(path, infer_schema_length=None)
    from adrank.data.readers import read_raw

    has_header = _resolve_header(path, has_header, column_names, separator, expected)
    return read_raw(
        path,
        has_header=has_header,  # type: ignore[arg-type]
        column_names=column_names,
        separator=separator,
    ).frame


def iter_records(
    path: Path,
    *,
    batch_rows: int = READ_ROWS,
    has_header: bool | str = "auto",
    column_names: list[str] | None = None,
    separator: str | None = None,
    expected: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> Iterator[pl.DataFrame]:
    """:func:`read_records` in frames of ``batch_rows`` rows (the last may be shorter):
    CSV/TSV are read in byte chunks and Parquet by row groups, so memory is bounded by the
    batch (JSON lines are read whole, then sliced). The ``numeric`` columns are checked as
    ``adrank prepare`` checks a numeric feature's (text that is not a number, ±inf: a
    :class:`~adrank.data.readers.DataFormatError` naming the file, the line, ``row`` of a
    Parquet file or ``record`` of a JSON-lines file, the column and the value)."""
    from adrank.data.readers import check_numeric_columns, iter_raw_batches

    if _is_jsonl(path):
        frame = pl.read_ndjson(path, infer_schema_length=None)
        for start in range(0, max(frame.height, 1), batch_rows):
            batch = frame.slice(start, batch_rows)
            if numeric:  # records, not lines: blank lines are not counted
                records = np.arange(start + 1, start + 1 + batch.height, dtype=np.int64)
                check_numeric_columns(batch, numeric, path, records, unit="record")
            yield batch
        return
    has_header = _resolve_header(path, has_header, column_names, separator, expected)
    for batch in iter_raw_batches(
        path,
        batch_rows=batch_rows,
        has_header=has_header,  # type: ignore[arg-type]
        column_names=column_names,
        separator=separator,
        numeric=numeric,
    ):
        yield batch.frame


#: the readers' closing note on bad rows (``total_note``), which offers to skip them
_SKIP_NOTE = re.compile(re.escape(total_note(1234567)).replace("1234567", r"(\d+)") + "$")


def _no_skipping(exc: DataFormatError) -> DataFormatError:
    """``exc`` with the readers' note offering to skip bad rows replaced: a prediction file
    has one row per input row, so ``adrank predict`` skips none (and has no such option)."""
    text = _SKIP_NOTE.sub(
        lambda m: (
            f" ({m[1]} bad row(s) in total; adrank predict skips no row, as its output has "
            "one row per input row: correct them)"
        ),
        str(exc),
    )
    return exc if text == str(exc) else DataFormatError(text)


def _numeric_columns(predictor: Predictor) -> list[str]:
    """The raw columns of the run's numeric features (not those its transforms derive), and
    the raw columns its transforms read as numbers (Criteo's I1..I13)."""
    from adrank.data.readers import numeric_transform_inputs

    schema = predictor.processor.schema
    sources = (f.source or f.name for f in schema.features if isinstance(f, NumericFeature))
    numeric = [c for c in sources if c not in predictor.derived]
    return list(dict.fromkeys([*numeric, *numeric_transform_inputs(schema)]))


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


def output_format(output_path: Path) -> str:
    """The format :func:`predict_file` writes to ``output_path``, from its suffix
    (:data:`OUTPUT_FORMATS`); any other suffix is a ValueError (it was written as CSV)."""
    fmt = OUTPUT_FORMATS.get(output_path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"--output {output_path}: cannot tell the output format from the suffix "
            f"{output_path.suffix or '(none)'!r}; known: {', '.join(OUTPUT_FORMATS)}"
        )
    return fmt


class _Writer:
    """Appends scored frames to one open file in ``fmt`` (the first frame fixes the
    columns and, for Parquet, the schema)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self.handle: IO[bytes] | None = None
        self.parquet: Any = None

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(str(self.path), table.schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
            return
        first = self.handle is None
        if self.handle is None:
            self.handle = open(self.path, "wb")  # noqa: SIM115  (closed by close())
        if self.fmt == "jsonl":
            frame.write_ndjson(self.handle)
        else:
            separator = "\t" if self.fmt == "tsv" else ","
            frame.write_csv(self.handle, include_header=first, separator=separator)

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.handle is not None:
            self.handle.close()


def _text_columns(predictor: Predictor, frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """``frame`` ready for a CSV/TSV file: a list-valued history as the delimited text a
    CSV input holds; any other nested column is refused, naming it (CSV cannot hold one)."""
    histories = [  # join_histories refuses a nested value of another field, naming it
        c for c, dtype in frame.schema.items() if c in predictor.field_kinds and dtype.is_nested()
    ]
    if histories:
        frame = frame.with_columns(predictor.join_histories(frame.select(histories)).get_columns())
    nested = [c for c, dtype in frame.schema.items() if dtype.is_nested()]
    if nested:
        raise ValueError(
            f"input column(s) {nested} hold nested values (lists or structs), which "
            f"{path.suffix} output cannot hold; write a .parquet or .jsonl --output"
        )
    return frame


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
    backend: str = "torch",
) -> tuple[int, float]:
    """Score every row of ``input_path`` (read by :func:`iter_records` with the header,
    column and separator options, :data:`READ_ROWS` rows at a time); write its columns
    (pass-through metadata such as a request id included) plus one column per output
    (``Predictor.outputs``: ``pctr``, and ``pcvr``/``pctcvr`` for a click/conversion model)
    to ``output_path``, in the format its suffix names (:func:`output_format`: CSV, TSV,
    Parquet or JSON lines), atomically (a temporary file renamed into place, so a failed run
    leaves no partial file). An existing ``output_path`` is refused unless ``overwrite``
    (never the input itself): see :func:`check_output_path`. Returns (rows, seconds spent
    scoring). ``backend``: ``torch``, or an exported ``torchscript``/``onnx`` file of the run
    (``adrank export``), as :meth:`Predictor.load` takes it."""
    from adrank.utils import atomic_write

    output_path, input_path = Path(output_path), Path(input_path)
    check_output_path(output_path, input_path, overwrite)
    fmt = output_format(output_path)
    predictor = Predictor.load(run_dir, batch_size=batch_size, backend=backend)
    read_rows = -(-max(READ_ROWS, batch_size) // batch_size) * batch_size
    numeric = _numeric_columns(predictor)
    # a file must hold every numeric column too (a frame or a record may leave one out):
    # a renamed upstream column would otherwise silently take the fill value in every row
    needed = list(dict.fromkeys([*predictor.required_fields, *numeric]))
    batches = iter_records(
        input_path,
        batch_rows=read_rows,
        has_header=has_header,
        column_names=column_names,
        separator=separator,
        expected=predictor.required_fields,
        numeric=numeric,
    )
    rows, seconds = 0, 0.0

    def score(frame: pl.DataFrame, first: bool) -> pl.DataFrame:
        nonlocal rows, seconds
        if first:
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                absent = [c for c in missing if c in numeric]
                why = (
                    f". A file needs every numeric feature's column too ({absent}): leave a "
                    "value empty where it is unknown, and it takes the feature's fill value"
                    if absent
                    else ""
                )
                raise RecordError(
                    f"{input_path}: required column(s) {missing} are missing from the input; "
                    f"it has {frame.columns}{why}",
                    field=missing[0],
                )
            missing = [c for c in predictor.passthrough if c not in frame.columns]
            if missing:
                logger.warning("pass-through column(s) %s are not in %s", missing, input_path)
            clash = [name for name in predictor.outputs if name in frame.columns]
            if clash:
                logger.warning("input column(s) %s are replaced by the model's outputs", clash)
        if fmt in ("csv", "tsv"):  # before scoring: a column CSV cannot hold fails now
            frame = _text_columns(predictor, frame, output_path)
        t0 = time.perf_counter()
        probs = predictor.predict_outputs(frame)
        seconds += time.perf_counter() - t0
        rows += frame.height
        return frame.with_columns([pl.Series(name, probs[name]) for name in predictor.outputs])

    def write(path: Path) -> None:
        writer = _Writer(path, fmt)
        try:
            for i, frame in enumerate(batches):
                writer.write(score(frame, first=i == 0))
        except DataFormatError as exc:
            plain = _no_skipping(exc)
            if plain is exc:
                raise
            raise plain from exc
        finally:
            writer.close()
        check_output_path(output_path, input_path, overwrite)  # it may have appeared since

    atomic_write(output_path, write)
    return rows, seconds
