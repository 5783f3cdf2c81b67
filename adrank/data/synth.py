"""Synthetic data with the Criteo schema, for speed and scale tests only.

**Synthetic.** Rows come from a random generator, not from any real log. Use them to
measure throughput, memory and scaling; never quote accuracy (AUC, logloss) on them.

Layout (like Criteo's Kaggle ``train.txt``): ``label`` (int8, 0/1), ``I1..I13`` (int64
counts with nulls) and ``C1..C26`` (8-character lowercase hex strings with nulls, like
Criteo's hashed values). Hex strings, rather than int64 ids, make the preprocessing path
realistic: the FeatureProcessor reads categorical values as strings, so string columns cost
what real Criteo costs (Arrow string buffers, dictionary lookups on strings).

Value model:

* categorical field ``Cj`` has cardinality ``K_j`` from :data:`CRITEO_CARDINALITIES` (the
  per-field counts of the Kaggle set, as used by DLRM's Kaggle config: C3 ~10.1M,
  C12 ~8.4M, C21 ~7.0M, C16 ~5.5M, C4 ~2.2M, and many small fields), times
  ``cardinality_scale``, capped at ``max_cardinality``. Ranks ``r`` in ``[0, K)`` follow a
  truncated power law ``P(r) ~ (r + 1)^-s`` (``zipf_exponent`` s, default 1.1), drawn by
  inverse CDF of the continuous law and floored (vectorized, O(1) memory per field). The
  string of rank ``r`` is a bijective 32-bit mix of ``(field, r)`` in hex.
* missing rates per field follow Criteo's (approximate, e.g. I12 ~76 %, C22 ~76 %).
* numeric ``Ij`` = floor(lognormal(mu_j, sigma_j)), non-negative, with missing values.
* labels: ``y ~ Bernoulli(sigmoid(b + sum_f w_f(value_f) + sum_p w_p(pair) + sum_i a_i
  log1p(I_i)))``. ``w_f`` are per-value weights derived from a hash of (field, rank), so
  no table is stored; ``b`` is solved on a fixed calibration sample so the CTR is about
  ``ctr`` (default 0.25).

Determinism: rows are generated in fixed blocks of :data:`BLOCK_ROWS` rows, block ``k``
from ``numpy.random.default_rng([seed, k])``. The output therefore depends only on
``seed``, ``rows`` and the value-model arguments; ``chunk_rows`` (the Parquet row-group
size, rounded up to whole blocks) changes only the file layout, never the values.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adrank.data.schema import CategoricalFeature, NumericFeature, Schema

logger = logging.getLogger(__name__)

NUMERIC_FIELDS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_FIELDS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
LABEL = "label"
BLOCK_ROWS = 65_536

#: Per-field cardinalities of the Criteo Kaggle set (DLRM's Kaggle embedding sizes).
CRITEO_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
#: Approximate missing rates of Criteo's categorical fields.
CATEGORICAL_MISSING: tuple[float, ...] = (
    0.0, 0.0, 0.034, 0.034, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.034, 0.0,
    0.0, 0.0, 0.034, 0.0, 0.0, 0.44, 0.44, 0.034, 0.76, 0.0, 0.034, 0.44, 0.44,
)  # fmt: skip
#: Approximate missing rates of Criteo's numeric fields.
NUMERIC_MISSING: tuple[float, ...] = (
    0.45, 0.0, 0.21, 0.22, 0.026, 0.22, 0.043, 0.0005, 0.043, 0.45, 0.043, 0.76, 0.22,
)  # fmt: skip
#: (mu, sigma) of the lognormal behind each numeric field.
NUMERIC_LOGNORMAL: tuple[tuple[float, float], ...] = (
    (0.5, 1.2), (2.5, 2.0), (1.5, 1.5), (1.5, 1.0), (7.0, 2.5), (3.5, 2.0), (1.2, 1.5),
    (2.3, 1.0), (3.5, 1.5), (0.3, 0.8), (1.0, 1.0), (0.2, 1.0), (1.5, 1.0),
)  # fmt: skip
#: Fields (0-based categorical indices) that carry label signal, and interacting pairs.
_SIGNAL_FIELDS: tuple[int, ...] = (0, 1, 4, 5, 7, 9, 10, 13, 16, 19, 22, 24)
_SIGNAL_PAIRS: tuple[tuple[int, int], ...] = ((0, 5), (4, 13), (9, 16))
_NUMERIC_WEIGHTS: tuple[float, ...] = (
    0.15, -0.05, 0.0, 0.1, -0.08, 0.0, 0.12, 0.0, 0.05, 0.2, 0.1, 0.0, -0.05,
)  # fmt: skip
_CALIBRATION_BLOCKS = 4
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: byte -> its two lowercase hex characters, as one little-endian uint16 ("ab" -> b"ab")
_HEX_PAIRS = _HEX[np.arange(256) >> 4].astype(np.uint16) | (
    _HEX[np.arange(256) & 15].astype(np.uint16) << 8
)


def criteo_cardinalities(
    cardinality_scale: float = 1.0,
    max_cardinality: int = 10_000_000,
    cardinalities: Sequence[int] | None = None,
) -> list[int]:
    """Per-field cardinalities of C1..C26: the Criteo table (or ``cardinalities``) times
    ``cardinality_scale``, capped at ``max_cardinality``, at least 2."""
    base = list(CRITEO_CARDINALITIES if cardinalities is None else cardinalities)
    if len(base) != len(CATEGORICAL_FIELDS):
        raise ValueError(f"cardinalities needs {len(CATEGORICAL_FIELDS)} values, got {len(base)}")
    if cardinality_scale <= 0 or max_cardinality < 2:
        raise ValueError(
            f"cardinality_scale must be > 0 and max_cardinality >= 2, got "
            f"{cardinality_scale} and {max_cardinality}"
        )
    return [max(2, min(max_cardinality, round(k * cardinality_scale))) for k in base]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (bijective on uint64), vectorized."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash_uniform(field: int, values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random number in [-sqrt(3), sqrt(3)) (mean 0, std 1) per value."""
    with np.errstate(over="ignore"):
        key = values.astype(np.uint64) + np.uint64((field * 1_000_003 + salt) << 34)
    bits = _mix64(key) >> np.uint64(11)  # 53 random bits
    return (bits.astype(np.float64) / float(1 << 53) - 0.5) * (2 * math.sqrt(3.0))


def _hex_strings(field: int, ranks: np.ndarray, missing: np.ndarray) -> pa.Array:
    """8-char hex strings, one per rank (a bijection per field), nulls where ``missing``."""
    # 32-bit odd-multiplier mix xor a field constant: bijective on [0, 2^32) per field.
    salt = int(_mix64(np.array([field + 1], dtype=np.uint64))[0]) & 0xFFFFFFFF
    with np.errstate(over="ignore"):
        code = (ranks.astype(np.uint32) * np.uint32(2654435761)) ^ np.uint32(salt)
    # big-endian bytes -> two hex characters per byte via a 256-entry table
    data = _HEX_PAIRS[code.astype(">u4").view(np.uint8)].view(np.uint8)  # (n * 8,)
    n = len(ranks)
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    validity = None
    null_count = int(missing.sum())
    if null_count:
        validity = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)], null_count
    )


def _zipf_ranks(rng: np.random.Generator, n: int, k: int, s: float) -> np.ndarray:
    """Ranks in [0, k) with P(r) ~ (r + 1)^-s (continuous inverse CDF, floored)."""
    u = rng.random(n)
    if abs(s - 1.0) < 1e-9:
        x = np.exp(u * math.log(k + 1.0))
    else:
        a = 1.0 - s
        x = (1.0 + u * ((k + 1.0) ** a - 1.0)) ** (1.0 / a)
    return np.minimum(np.floor(x).astype(np.int64) - 1, k - 1)


class _BlockGenerator:
    """Generates block ``k`` of the synthetic table (deterministic by seed and ``k``)."""

    def __init__(
        self, seed: int, cards: list[int], zipf_exponent: float, ctr: float, concept: int = 0
    ) -> None:
        if not 0.0 < ctr < 1.0:
            raise ValueError(f"ctr must lie in (0, 1), got {ctr}")
        self.seed = seed
        self.concept = concept
        self.cards = cards
        self.s = zipf_exponent
        self.bias = 0.0
        logits = np.concatenate(
            [self._draw(10_000_000 + i, BLOCK_ROWS)[2] for i in range(_CALIBRATION_BLOCKS)]
        )
        self.bias = _solve_bias(logits, ctr)

    def _draw(self, block: int, n: int) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, block])
        columns: dict[str, pa.Array] = {}
        logit = np.full(n, self.bias)
        for i, name in enumerate(NUMERIC_FIELDS):
            mu, sigma = NUMERIC_LOGNORMAL[i]
            values = np.floor(rng.lognormal(mu, sigma, n)).astype(np.int64)
            missing = rng.random(n) < NUMERIC_MISSING[i]
            columns[name] = pa.array(values, mask=missing if missing.any() else None)
            if _NUMERIC_WEIGHTS[i]:
                logit += _NUMERIC_WEIGHTS[i] * np.where(missing, 0.0, np.log1p(values) - mu)
        ranks: list[np.ndarray] = []
        for j, name in enumerate(CATEGORICAL_FIELDS):
            r = _zipf_ranks(rng, n, self.cards[j], self.s)
            missing = rng.random(n) < CATEGORICAL_MISSING[j]
            columns[name] = _hex_strings(j, r, missing)
            ranks.append(np.where(missing, -1, r))
        for j in _SIGNAL_FIELDS:
            logit += 0.5 * _hash_uniform(j, ranks[j] + 1, salt=1 + 1000 * self.concept)
        for a, b in _SIGNAL_PAIRS:
            pair = (ranks[a] + 1) * (self.cards[b] + 1) + ranks[b] + 1
            logit += 0.4 * _hash_uniform(a * 26 + b, pair, salt=2 + 1000 * self.concept)
        return columns, rng.random(n), logit

    def block(self, k: int, n: int) -> pa.Table:
        columns, u, logit = self._draw(k, n)
        label = (u < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
        return pa.table({LABEL: pa.array(label), **columns})


def _solve_bias(logits: np.ndarray, ctr: float) -> float:
    """b with mean(sigmoid(logits + b)) = ctr (Newton; the mean is monotone in b)."""
    b = math.log(ctr / (1.0 - ctr)) - float(np.mean(logits))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(logits + b)))
        gap = float(p.mean()) - ctr
        if abs(gap) < 1e-7:
            break
        b -= gap / max(float(np.mean(p * (1.0 - p))), 1e-6)
    return b


def iter_criteo_blocks(
    rows: int,
    seed: int = 0,
    cardinalities: Sequence[int] | None = None,
    max_cardinality: int = 10_000_000,
    cardinality_scale: float = 1.0,
    ctr: float = 0.25,
    zipf_exponent: float = 1.1,
    start_block: int = 0,
    concept: int = 0,
) -> Iterator[pa.Table]:
    """Yield the synthetic table in blocks of :data:`BLOCK_ROWS` rows (the last is shorter),
    starting at block ``start_block``. ``concept`` picks the hidden label model: the same
    seed gives the same feature values under every concept, with labels from other
    per-value weights (concept 0 is the default table; :mod:`adrank.stream.drift_synth`
    builds drifting streams from several concepts)."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    cards = criteo_cardinalities(cardinality_scale, max_cardinality, cardinalities)
    gen = _BlockGenerator(seed, cards, zipf_exponent, ctr, concept)
    for k in range(start_block, -(-rows // BLOCK_ROWS)):
        yield gen.block(k, min(BLOCK_ROWS, rows - k * BLOCK_ROWS))


def synth_criteo(
    path: str | Path,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 1_000_000,
    cardinalities: Sequence[int] | None = None,
    max_cardinality: int = 10_000_000,
    ctr: float = 0.25,
    *,
    cardinality_scale: float = 1.0,
    zipf_exponent: float = 1.1,
    compression: str = "snappy",
) -> Path:
    """Write ``rows`` synthetic Criteo-schema rows to the Parquet file ``path``.

    Memory stays bounded by one chunk: each row group holds ``chunk_rows`` rows (rounded up
    to whole :data:`BLOCK_ROWS` blocks). The file is written to a temporary name and renamed
    into place, so an interrupted run leaves no partial file at ``path``. See the module
    docstring for the value model and the determinism guarantee. Returns ``path``.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks_per_chunk = max(1, -(-chunk_rows // BLOCK_ROWS))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    try:
        with pq.ParquetWriter(tmp, arrow_schema(), compression=compression) as writer:
            pending: list[pa.Table] = []
            blocks = iter_criteo_blocks(
                rows, seed, cardinalities, max_cardinality, cardinality_scale, ctr, zipf_exponent
            )
            for table in blocks:
                pending.append(table)
                if len(pending) == blocks_per_chunk:
                    written += _write_chunk(writer, pending)
                    pending = []
                    logger.info("synth_criteo: %d / %d rows", written, rows)
            if pending:
                written += _write_chunk(writer, pending)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def arrow_schema() -> pa.Schema:
    """Arrow schema of the synthetic table: label int8, I1..I13 int64, C1..C26 string."""
    return pa.schema(
        [(LABEL, pa.int8())]
        + [(n, pa.int64()) for n in NUMERIC_FIELDS]
        + [(n, pa.string()) for n in CATEGORICAL_FIELDS]
    )


def _write_chunk(writer: pq.ParquetWriter, tables: list[pa.Table]) -> int:
    chunk = pa.concat_tables(tables)
    writer.write_table(chunk, row_group_size=chunk.num_rows)
    return chunk.num_rows


def criteo_synth_schema(
    hash_buckets: int | None = None,
    *,
    numeric: str = "log1p",
    numeric_buckets: int = 32,
    min_count: int = 1,
    cardinalities: Sequence[int] | None = None,
    max_cardinality: int = 10_000_000,
    cardinality_scale: float = 1.0,
) -> Schema:
    """The :class:`Schema` of the synthetic Criteo table.

    Args:
        hash_buckets: if set, categorical fields whose cardinality exceeds it are hashed
            into this many buckets (bounded embedding tables); the others get a fitted
            vocabulary. ``None`` fits a vocabulary for every field.
        numeric: ``"log1p"`` (missing -> 0, then log1p) or ``"buckets"`` (quantile buckets,
            embedded as categorical ids).
        numeric_buckets: bucket count for ``numeric="buckets"``.
        min_count: vocabulary min count for non-hashed categorical fields.
        cardinalities, max_cardinality, cardinality_scale: as given to the generator, so
            the hashing decision matches the data.
    """
    if numeric not in ("log1p", "buckets"):
        raise ValueError(f"numeric must be 'log1p' or 'buckets', got {numeric!r}")
    cards = criteo_cardinalities(cardinality_scale, max_cardinality, cardinalities)
    features: list[CategoricalFeature | NumericFeature] = []
    for name in NUMERIC_FIELDS:
        if numeric == "log1p":
            features.append(NumericFeature(name, fill_value=0.0, normalizer="log1p"))
        else:
            features.append(NumericFeature(name, buckets=numeric_buckets))
    for name, k in zip(CATEGORICAL_FIELDS, cards, strict=True):
        hashed = hash_buckets is not None and k > hash_buckets
        features.append(
            CategoricalFeature(
                name, min_count=min_count, hash_buckets=hash_buckets if hashed else None
            )
        )
    return Schema(labels=(LABEL,), features=tuple(features), name="criteo_synth")
