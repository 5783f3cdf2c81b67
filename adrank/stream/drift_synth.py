"""A **synthetic** Criteo-schema stream with concept drift at documented chunks.

**Synthetic.** Rows come from :mod:`adrank.data.synth`'s generator (feature values with
Criteo's shape; labels from a hidden logistic model of hashed per-value weights). Under
different ``concept`` numbers the same rows get labels from different hidden weights, so a
change of concept is a pure concept drift: P(y | x) changes, P(x) does not. Never quote
accuracy on this data as anything but a drift test.

Default shape (:data:`DEFAULT_SCHEDULE`), in chunks of ``rows`` rows (default 40 x 5,000;
the issue's example is 40 x 100,000, scaled down to fit a CPU benchmark):

* chunks 0-9: concept A;
* chunk 10: **abrupt** drift to concept B;
* chunks 20-25: **gradual** drift from B to C, the share of C rows rising linearly
  (1/6 .. 5/6 in chunks 20-24, all C from chunk 25);
* chunk 30: **recurrence**: concept A again, abruptly.

:func:`drifting_criteo_stream` returns the schema (with a ``time`` role on the row
number), the chunks and the truth, :data:`DRIFTS` (type, first chunk, last chunk).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from adrank.data.schema import Schema
from adrank.data.synth import LABEL, criteo_synth_schema, iter_criteo_blocks

__all__ = ["DEFAULT_SCHEDULE", "DRIFTS", "Drift", "concept_shares", "drifting_criteo_stream"]


@dataclass(frozen=True)
class Drift:
    """A true drift: ``kind`` (abrupt, gradual, recurrent), its first and last chunk."""

    kind: str
    start: int
    end: int


#: the drifts of the default schedule
DRIFTS = (Drift("abrupt", 10, 10), Drift("gradual", 20, 25), Drift("recurrent", 30, 30))
#: per chunk, the share of rows of each concept (A, B, C) in the default 40-chunk stream
DEFAULT_SCHEDULE = "A x10, B x10, B->C over 20-25, C x5, A x10"


def concept_shares(chunk: int) -> tuple[float, float, float]:
    """The shares of concepts A, B, C in ``chunk`` of the default schedule."""
    if chunk < 10 or chunk >= 30:
        return 1.0, 0.0, 0.0
    if chunk < 20:
        return 0.0, 1.0, 0.0
    if chunk < 25:
        c = (chunk - 20 + 1) / 6
        return 0.0, 1.0 - c, c
    return 0.0, 0.0, 1.0


def drifting_criteo_stream(
    chunks: int = 40,
    rows: int = 5_000,
    seed: int = 0,
    max_cardinality: int = 1_000,
    ctr: float = 0.25,
) -> tuple[Schema, list[pl.DataFrame], tuple[Drift, ...]]:
    """The synthetic drifting stream (module docstring): schema, chunks, true drifts."""
    if chunks < 31:
        raise ValueError(f"the default schedule needs at least 31 chunks, got {chunks}")
    total = chunks * rows

    def table(concept: int) -> pa.Table:
        return pa.concat_tables(
            iter_criteo_blocks(total, seed, max_cardinality=max_cardinality, ctr=ctr,
                               concept=concept)
        )  # fmt: skip

    base = table(0)
    labels = np.stack(
        [base.column(LABEL).to_numpy()] + [table(k).column(LABEL).to_numpy() for k in (1, 2)],
        axis=1,
    )  # (rows, 3): the label of every row under concepts A, B, C
    rng = np.random.default_rng([seed, 4_242])
    chosen = np.empty(total, dtype=np.int64)
    for c in range(chunks):
        shares = concept_shares(c)
        chosen[c * rows : (c + 1) * rows] = rng.choice(3, size=rows, p=shares)
    frame = pl.from_arrow(base).with_columns(
        pl.Series(LABEL, labels[np.arange(total), chosen], dtype=pl.Int8),
        pl.Series("time", np.arange(total, dtype=np.int64)),
        pl.Series("concept", chosen, dtype=pl.Int8),
    )
    assert isinstance(frame, pl.DataFrame)
    schema = criteo_synth_schema(max_cardinality=max_cardinality)
    schema = dataclasses.replace(schema, roles={"time": "time"}, name="criteo_synth_drift")
    parts = [frame.slice(c * rows, rows) for c in range(chunks)]
    return schema, parts, DRIFTS
