"""Unknown domains at serving: counted, never an error.

A multi-domain model reads the domain from a categorical feature that the schema also
declares as the ``domain`` role (:mod:`adrank.nn.domain`); in ``/v1/rank`` it usually comes
in the request ``context``. A domain that is missing from a scored record, or was never
seen in training, encodes to the OOV id and takes the model's fallback slot, which domain
dropout trained (``domain_dropout``). :class:`DomainFallbacks` counts those rows for
``/metrics`` (``adrank_domain_fallback_total`` by reason ``missing`` / ``unseen``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from adrank.serve.columnar import PairRecords

if TYPE_CHECKING:
    from adrank.serve.predictor import Predictor


def domain_values(predictor: Predictor) -> tuple[str, frozenset[str]] | None:
    """(the domain's raw column, the domain values seen in training), or None when the
    served schema has no domain role on a categorical feature."""
    schema = predictor.processor.schema
    column = schema.roles.get("domain")
    if not isinstance(column, str):
        return None
    feature = next((f for f in schema.features if (f.source or f.name) == column), None)
    if feature is None or getattr(feature, "type", None) != "categorical":
        return None
    vocab = getattr(predictor.processor, "vocab_", {})
    table = getattr(feature, "share_vocab_with", None) or feature.name
    known = vocab.get(table) or predictor.processor.role_vocab_.get("domain", [])
    return column, frozenset(str(v) for v in known)


class DomainFallbacks:
    """Thread-safe counts of scored rows that took the unknown-domain fallback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"missing": 0, "unseen": 0}
        self._cache: tuple[int, tuple[str, frozenset[str]] | None] | None = None

    def _spec(self, predictor: Predictor) -> tuple[str, frozenset[str]] | None:
        cached = self._cache
        if cached is None or cached[0] != id(predictor):  # a reload brings a new predictor
            cached = (id(predictor), domain_values(predictor))
            self._cache = cached
        return cached[1]

    def observe(self, predictor: Predictor, records: Sequence[Mapping[str, Any]]) -> None:
        """Count the rows of ``records`` (about to be scored) whose domain is unknown."""
        spec = self._spec(predictor)
        if spec is None or not len(records):
            return
        column, known = spec
        if isinstance(records, PairRecords) and not any(column in r for r in records.rows):
            values: list[Any] = [records.context.get(column)] * len(records)
        else:
            values = [r.get(column) for r in records]
        missing = sum(v is None or v == "" for v in values)
        unseen = sum(v is not None and v != "" and str(v) not in known for v in values)
        if missing or unseen:
            with self._lock:
                self.counts["missing"] += missing
                self.counts["unseen"] += unseen

    def metric_values(self) -> dict[str, tuple[str, str, Mapping[str, float]]]:
        with self._lock:
            counts = dict(self.counts)
        return {
            "adrank_domain_fallback_total": (
                "counter",
                "Scored rows whose domain was missing or unseen in training (by reason): "
                "they took the model's trained fallback (OOV) domain slot.",
                counts,
            )
        }
