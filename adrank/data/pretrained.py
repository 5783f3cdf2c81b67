"""Pretrained vectors of an id feature (the ``pretrained`` feature type of the schema).

A vectors file is a Parquet table with one row per id: an id column (the raw id, as in the
data) and a vector column (a list of floats, the same length on every row). The processor
aligns it to the fitted vocabulary of the id feature (:func:`align_vectors`): row ``i`` of
the table is the vector of the id encoded as ``i``; padding (0), OOV (1) and vocabulary ids
without a vector get zeros. The aligned table is saved with the processor and with the
feature map (:func:`save_table`, ``.npy`` without pickles), so training and serving use the
same one.

:func:`text_vectors` builds vectors from short texts (TF-IDF, then a truncated SVD, numpy
only). They are **lexical** (which words two texts share), not learned multimodal
embeddings; ``movielens_100k_text`` uses them for movie titles and genres.

Notation: V vocabulary size (with the two reserved ids), d vector length.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.schema import NUM_RESERVED_IDS, PretrainedFeature, SchemaError
from adrank.utils import atomic_write

logger = logging.getLogger(__name__)


def read_vectors(feature: PretrainedFeature) -> pl.DataFrame:
    """The Parquet file of ``feature.vectors`` (id and vector columns only)."""
    where = f"pretrained feature {feature.name!r}"
    if not feature.vectors:
        raise SchemaError(
            f"{where} has no vectors: set 'vectors' to a Parquet file in the schema, or pass "
            "them in code (FeatureProcessor.fit(frame, vectors={name: frame}))"
        )
    path = Path(feature.vectors)
    if not path.is_file():
        raise SchemaError(f"{where}: vectors file not found: {path}")
    try:
        return pl.read_parquet(path, columns=[feature.id_column, feature.vector_column])
    except (pl.exceptions.ColumnNotFoundError, pl.exceptions.ComputeError, OSError) as exc:
        raise SchemaError(
            f"{where}: cannot read columns {[feature.id_column, feature.vector_column]} "
            f"from {path}: {exc}"
        ) from exc


def vector_matrix(frame: pl.DataFrame, feature: PretrainedFeature) -> tuple[list[str], np.ndarray]:
    """Validated ``(ids as text, vectors (N, d) float32)`` of a vectors table: every id
    present and distinct, every vector present, the same length (``feature.dim`` when set)
    and finite. Errors name the id and the row."""
    where = f"pretrained feature {feature.name!r}"
    for column in (feature.id_column, feature.vector_column):
        if column not in frame.columns:
            raise SchemaError(f"{where}: the vectors have no column {column!r}: {frame.columns}")
    if frame.height == 0:
        raise SchemaError(f"{where}: the vectors table is empty")
    ids = frame.get_column(feature.id_column).cast(pl.Utf8)
    if ids.null_count():
        row = int(ids.is_null().arg_max())  # type: ignore[arg-type]
        raise SchemaError(f"{where}: id column {feature.id_column!r} is empty in row {row}")
    duplicated = ids.is_duplicated()
    if duplicated.any():
        first = ids.filter(duplicated)[0]
        rows = np.flatnonzero((ids == first).to_numpy()).tolist()
        raise SchemaError(f"{where}: id {first!r} has more than one vector (rows {rows})")
    column = frame.get_column(feature.vector_column)
    if not isinstance(column.dtype, (pl.List, pl.Array)) or not column.dtype.inner.is_numeric():
        raise SchemaError(
            f"{where}: vector column {feature.vector_column!r} must hold lists of floats, "
            f"got {column.dtype}"
        )
    lengths = column.list.len() if isinstance(column.dtype, pl.List) else None
    if column.null_count() or (lengths is not None and lengths.null_count()):
        row = int(column.is_null().arg_max())  # type: ignore[arg-type]
        raise SchemaError(f"{where}: id {ids[row]!r} (row {row}) has no vector")
    dim = feature.dim or (int(lengths[0]) if lengths is not None else column.dtype.size)
    if lengths is not None and (lengths != dim).any():
        row = int((lengths != dim).arg_max())  # type: ignore[arg-type]
        raise SchemaError(
            f"{where}: id {ids[row]!r} (row {row}) has a vector of length {lengths[row]}, "
            f"expected {dim}" + (" (the schema's dim)" if feature.dim else " (as row 0)")
        )
    if lengths is None and column.dtype.size != dim:
        raise SchemaError(
            f"{where}: the vectors have length {column.dtype.size}, the schema's dim is {dim}"
        )
    flat = column.explode() if lengths is not None else column.arr.explode()
    if flat.null_count():
        row = int(np.flatnonzero(flat.is_null().to_numpy())[0]) // dim
        raise SchemaError(f"{where}: id {ids[row]!r} (row {row}) has an empty vector entry")
    matrix = flat.cast(pl.Float64).to_numpy().reshape(frame.height, dim)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SchemaError(f"{where}: id {ids[row]!r} (row {row}) has a NaN or infinite value")
    return ids.to_list(), matrix.astype(np.float32)


def align_vectors(
    frame: pl.DataFrame, feature: PretrainedFeature, vocabulary: Sequence[str]
) -> np.ndarray:
    """The table (V, d) float32: row ``i + 2`` is the vector of ``vocabulary[i]``; padding,
    OOV and vocabulary values without a vector are zeros (their count is logged). Ids of
    the file outside the vocabulary are not used (unseen ids encode as OOV)."""
    ids, matrix = vector_matrix(frame, feature)
    table = np.zeros((len(vocabulary) + NUM_RESERVED_IDS, matrix.shape[1]), dtype=np.float32)
    row_of = {v: i for i, v in enumerate(ids)}
    rows = np.array([row_of.get(v, -1) for v in vocabulary], dtype=np.int64)
    found = rows >= 0
    table[NUM_RESERVED_IDS:][found] = matrix[rows[found]]
    missing = int((~found).sum())
    if missing:
        logger.warning(
            "pretrained feature %r: %d of %d vocabulary values have no vector (zeros)",
            feature.name,
            missing,
            len(vocabulary),
        )
    return table


def save_table(path: Path, table: np.ndarray) -> None:
    """Write a (V, d) float32 table as ``.npy`` (no pickles), atomically."""

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, np.ascontiguousarray(table, dtype=np.float32), allow_pickle=False)

    atomic_write(Path(path), write)


def load_table(path: Path, name: str) -> np.ndarray:
    """Read a table written by :func:`save_table`; a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vectors of pretrained feature {name!r} missing: {path}")
    return np.load(path, allow_pickle=False)


_TOKEN = re.compile(r"[a-z0-9]+")


def text_vectors(ids: Sequence[str], texts: Sequence[str], dim: int) -> pl.DataFrame:
    """Lexical vectors of short texts: TF-IDF (smoothed idf, l2-normalised rows) of the
    lower-cased alphanumeric tokens, projected on the top ``dim`` singular vectors (a
    truncated SVD, signs fixed so that each component's largest loading is positive), rows
    l2-normalised. Deterministic. Returns ``id`` and ``vector`` (list of float32) columns.

    These vectors say which words two texts share; they are not learned (multimodal)
    embeddings."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    docs = [_TOKEN.findall(t.lower()) for t in texts]
    terms = sorted({w for d in docs for w in d})
    if not terms:
        raise ValueError("the texts have no tokens")
    index = {w: j for j, w in enumerate(terms)}
    counts = np.zeros((len(docs), len(terms)))
    for i, d in enumerate(docs):
        for w in d:
            counts[i, index[w]] += 1
    df = (counts > 0).sum(axis=0)
    idf = np.log((1 + len(docs)) / (1 + df)) + 1
    tfidf = counts * idf
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
    k = min(dim, *tfidf.shape)
    u, s, vt = np.linalg.svd(tfidf, full_matrices=False)
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    vectors = u[:, :k] * s[:k] * signs
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if k < dim:
        vectors = np.pad(vectors, ((0, 0), (0, dim - k)))
    return pl.DataFrame(
        {"id": list(ids), "vector": vectors.astype(np.float32).tolist()},
        schema={"id": pl.Utf8, "vector": pl.List(pl.Float32)},
    )
