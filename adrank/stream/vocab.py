"""Vocabularies that grow over a stream: admission by ``min_count``, optional eviction,
re-use of freed ids, and the capacity of the tables behind them.

:class:`VocabularyGrowth` watches the chunks of a stream through a fitted
:class:`~adrank.data.processor.FeatureProcessor`:

* a value not yet in a table's vocabulary is counted over the stream (earlier chunks
  included) and **admitted** once its count reaches the table's ``min_count`` (the
  schema's, or ``min_count=`` for all tables); it gets the next free id, so every id that
  exists keeps its number and nothing is re-laid out;
* an admitted value keeps its id while it stays admitted;
* with ``evict_after=N`` an id whose value was not seen in the last ``N`` chunks is
  **evicted**: its value is forgotten (it maps to OOV again and counts from zero) and the
  id goes to a free list; the next admission re-uses it, and the caller re-initialises its
  row and optimizer state (:func:`adrank.stream.tables.reset_rows`) before use;
* :meth:`VocabularyGrowth.capacity` says how many rows each table's embedding needs:
  the vocabulary plus ``headroom`` (default 50 %), recomputed only when it runs out, so a
  model rarely has to grow (:func:`adrank.stream.tables.grow_model`).

An evicted slot holds a placeholder value (``"\\x00evicted:<id>"``) in the saved
vocabulary, which no raw value equals. Hashed tables (``hash_buckets``) never grow.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.processor import FeatureProcessor
from adrank.data.schema import NUM_RESERVED_IDS
from adrank.utils import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["EVICTED_PREFIX", "GrowthStep", "VocabularyGrowth"]

EVICTED_PREFIX = "\x00evicted:"
GROWTH_STATE_VERSION = 1


@dataclass
class GrowthStep:
    """What one chunk changed, per table: ``admitted`` ids (new or re-used: their rows need
    fresh weights and optimizer state) and ``evicted`` ids."""

    admitted: dict[str, np.ndarray] = field(default_factory=dict)
    evicted: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_admitted(self) -> int:
        return sum(len(v) for v in self.admitted.values())

    @property
    def num_evicted(self) -> int:
        return sum(len(v) for v in self.evicted.values())


class VocabularyGrowth:
    """Grow a processor's vocabularies chunk by chunk (see the module docstring).

    Args:
        min_count: admission threshold for every table (``None``: each table's schema
            ``min_count``).
        evict_after: evict ids unseen for this many chunks (``None``: never).
        headroom: spare rows reserved per table, as a fraction of its vocabulary.

    Learned state: ``pending_`` (table -> value -> count of values not yet admitted),
    ``last_seen_`` (table -> (ids,) chunk index each id was last seen, -1 unused),
    ``free_`` (table -> evicted ids, re-used first), ``capacity_`` (table -> rows).
    """

    def __init__(
        self, min_count: int | None = None, evict_after: int | None = None, headroom: float = 0.5
    ) -> None:
        if min_count is not None and min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if evict_after is not None and evict_after < 1:
            raise ValueError(f"evict_after must be >= 1 chunk, got {evict_after}")
        if headroom < 0:
            raise ValueError(f"headroom must be >= 0, got {headroom}")
        self.min_count = min_count
        self.evict_after = evict_after
        self.headroom = headroom

    def start(
        self, processor: FeatureProcessor, frame: pl.DataFrame | None = None, chunk: int = 0
    ) -> VocabularyGrowth:
        """Begin from ``processor``'s vocabularies; ``frame`` (the data it was fitted on, if
        at hand) seeds the counts of values that were below ``min_count`` there. Its ids
        count as seen in ``chunk``."""
        self.thresholds_ = {
            t: self.min_count or m
            for t, m in processor.min_counts().items()
            if t in processor.vocab_
        }
        self.pending_: dict[str, dict[str, int]] = {t: {} for t in self.thresholds_}
        self.last_seen_: dict[str, np.ndarray] = {}
        self.free_: dict[str, list[int]] = {t: [] for t in self.thresholds_}
        for table in self.thresholds_:
            n = len(processor.vocab_[table]) + NUM_RESERVED_IDS
            seen = np.full(n, chunk, dtype=np.int64)
            seen[:NUM_RESERVED_IDS] = -1
            self.last_seen_[table] = seen
        if frame is not None:
            for table, counts in processor.value_counts(frame).items():
                if table in self.pending_:
                    known = set(processor.vocab_[table])
                    self.pending_[table] = {v: c for v, c in counts.iter_rows() if v not in known}
        self.capacity_ = {t: self._with_headroom(len(s)) for t, s in self.last_seen_.items()}
        return self

    def _with_headroom(self, rows: int) -> int:
        return max(rows, math.ceil(rows * (1 + self.headroom)))

    def observe(self, processor: FeatureProcessor, frame: pl.DataFrame, chunk: int) -> GrowthStep:
        """Count ``frame`` (chunk number ``chunk``, raw columns), evict, then admit; updates
        ``processor``'s vocabularies in place."""
        if not hasattr(self, "pending_"):
            raise RuntimeError("VocabularyGrowth.observe before start(); call start() first")
        step = GrowthStep()
        counts = processor.value_counts(frame)
        for table, threshold in self.thresholds_.items():
            values = list(processor.vocab_[table])
            index = {v: i + NUM_RESERVED_IDS for i, v in enumerate(values)}
            seen = self.last_seen_[table]
            pending = self.pending_[table]
            candidates: list[tuple[str, int]] = []
            if table in counts:
                for value, count in counts[table].iter_rows():
                    known = index.get(value)
                    if known is not None:
                        seen[known] = chunk
                    else:
                        total = pending.get(value, 0) + int(count)
                        pending[value] = total
                        if total >= threshold:
                            candidates.append((value, total))
            evicted = self._evict(values, seen, chunk, table)
            # most frequent first, ties by value: the order fit() gives ids in
            candidates.sort(key=lambda vc: (-vc[1], vc[0]))
            admitted: list[int] = []
            for value, _ in candidates:
                free = self.free_[table]
                if free:
                    new_id = free.pop(0)
                    values[new_id - NUM_RESERVED_IDS] = value
                else:
                    values.append(value)
                    new_id = len(values) - 1 + NUM_RESERVED_IDS
                    seen = np.append(seen, -1)
                seen[new_id] = chunk
                del pending[value]
                admitted.append(new_id)
            self.last_seen_[table] = seen
            if admitted or evicted:
                processor.set_vocabulary(table, values)
            rows = len(values) + NUM_RESERVED_IDS
            if rows > self.capacity_[table]:
                self.capacity_[table] = self._with_headroom(rows)
            if admitted:
                step.admitted[table] = np.asarray(admitted, dtype=np.int64)
            if evicted:
                step.evicted[table] = np.asarray(evicted, dtype=np.int64)
        logger.info(
            "chunk %d: %d ids admitted, %d evicted", chunk, step.num_admitted, step.num_evicted
        )
        return step

    def _evict(self, values: list[str], seen: np.ndarray, chunk: int, table: str) -> list[int]:
        if self.evict_after is None:
            return []
        stale = np.flatnonzero((seen >= 0) & (seen <= chunk - self.evict_after - 1))
        stale = stale[stale >= NUM_RESERVED_IDS]
        for i in stale.tolist():
            values[i - NUM_RESERVED_IDS] = f"{EVICTED_PREFIX}{i}"
            seen[i] = -1
        self.free_[table].extend(stale.tolist())
        return stale.tolist()

    def capacity(self) -> dict[str, int]:
        """Rows (padding and OOV included) each table's embedding needs now."""
        return dict(self.capacity_)

    # ----------------------------------------------------------------- save / load ------
    def save(self, path: str | Path) -> None:
        """Write the growth state as JSON (atomically)."""
        state = {
            "version": GROWTH_STATE_VERSION,
            "min_count": self.min_count,
            "evict_after": self.evict_after,
            "headroom": self.headroom,
            "thresholds": self.thresholds_,
            "pending": self.pending_,
            "last_seen": {t: s.tolist() for t, s in self.last_seen_.items()},
            "free": self.free_,
            "capacity": self.capacity_,
        }
        atomic_write_text(Path(path), json.dumps(state))

    @classmethod
    def load(cls, path: str | Path) -> VocabularyGrowth:
        path = Path(path)
        state = json.loads(path.read_text())
        if state.get("version") != GROWTH_STATE_VERSION:
            raise ValueError(
                f"{path}: growth state version {state.get('version')!r} is not supported"
            )
        growth = cls(state["min_count"], state["evict_after"], state["headroom"])
        growth.thresholds_ = {k: int(v) for k, v in state["thresholds"].items()}
        growth.pending_ = {k: dict(v) for k, v in state["pending"].items()}
        growth.last_seen_ = {
            k: np.asarray(v, dtype=np.int64) for k, v in state["last_seen"].items()
        }
        growth.free_ = {k: list(v) for k, v in state["free"].items()}
        growth.capacity_ = {k: int(v) for k, v in state["capacity"].items()}
        return growth
