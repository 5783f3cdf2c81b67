"""Behaviour histories in serving requests.

A request sends a user's history with its context: a list of ids (or a delimited string),
oldest first. :class:`HistoryClipper` keeps the newest ``max_len`` items of each history
(the most any feature reading that column uses) before encoding, so a long history costs
``max_len`` items, not its full length, and counts every truncation for ``/metrics``.
Unknown ids are the processor's business: they encode as OOV.

:func:`score_rows` is the torch scorer of sequence models: rows that share their histories
(the K candidates of one request carry the same user's) are scored with the user-once API
(:meth:`~adrank.models.sequence_base.SequenceModel.encode_user` once per distinct history,
then :meth:`~adrank.models.sequence_base.SequenceModel.score` for its rows); the logits equal
``model(features)`` to float rounding (tested to 1e-6).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from adrank.data.histories import list_item_problem, text_has_gaps
from adrank.data.schema import Schema, SequenceFeature
from adrank.models.sequence_base import SequenceModel
from adrank.serve.columnar import PairRecords

#: beyond this many distinct histories per batch, one batched forward is cheaper than a
#: Python loop over users
MAX_USERS_PER_BATCH = 16


class HistoryClipper:
    """Cuts request histories to their newest ``max_len`` items and counts the cuts.

    Thread-safe: one instance serves every request of an app (the counts survive reloads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.truncated: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    @staticmethod
    def limits(schema: Schema) -> dict[str, tuple[int, str, str]]:
        """Raw history column -> (the largest ``max_len`` of the features reading it, its
        delimiter, its group: the column it is aligned with, or itself). Aligned columns
        share the largest ``max_len`` of their group, so they are cut alike."""
        out: dict[str, tuple[int, str, str]] = {}
        features = {f.name: f for f in schema.features if isinstance(f, SequenceFeature)}

        def root(f: SequenceFeature) -> str:
            seen = set()
            while f.aligned_with in features and f.name not in seen:
                seen.add(f.name)
                f = features[f.aligned_with]
            return f.source or f.name

        for f in features.values():
            src = f.source or f.name
            longest = max(f.max_len, out.get(src, (0, "", ""))[0])
            out[src] = (longest, f.delimiter, root(f))
        group_len: dict[str, int] = {}
        for longest, _, group in out.values():
            group_len[group] = max(longest, group_len.get(group, 0))
        return {src: (group_len[g], d, g) for src, (_, d, g) in out.items()}

    def clip(self, record: Mapping[str, Any], limits: Mapping[str, tuple[int, str, str]]) -> Any:
        """``record`` with each history longer than its limit cut to the newest items (a
        delimited string; a list of plain ids is joined); the record itself when nothing
        changes. Values that are not plain ids are left for the predictor to reject, and so
        are aligned histories of different lengths (or with an empty item): cut, they
        would look aligned."""
        items_of: dict[str, list[str] | None] = {}
        for name, (_, delimiter, _) in limits.items():
            value = record.get(name)
            if isinstance(value, str):
                items = [x for x in value.split(delimiter) if x != ""]
            elif isinstance(value, (list, tuple)) and list_item_problem(value, delimiter) is None:
                items = [str(x) for x in value]
            else:
                items = None
            if value is not None:
                items_of[name] = items
        members = Counter(group for _, _, group in limits.values())
        counts: dict[str, set[int | None]] = {}
        for name, items in items_of.items():
            delimiter, group = limits[name][1], limits[name][2]
            value = record.get(name)
            aligned = members[group] > 1
            gaps = aligned and isinstance(value, str) and text_has_gaps(value, delimiter)
            count = None if items is None or gaps else len(items)
            counts.setdefault(group, set()).add(count)
        changed: dict[str, Any] | None = None
        for name, items in items_of.items():
            max_len, delimiter, group = limits[name]
            whole = len(counts[group]) > 1 or None in counts[group]  # the predictor refuses it
            if items is None or len(items) <= max_len or whole:
                continue
            self._count(name, len(items) - max_len)
            changed = dict(record) if changed is None else changed
            changed[name] = delimiter.join(items[-max_len:])
        return record if changed is None else changed

    def with_context(
        self,
        context: Mapping[str, Any],
        records: Sequence[Mapping[str, Any]],
        limits: Mapping[str, tuple[int, str, str]],
    ) -> Sequence[Mapping[str, Any]]:
        """``{**context, **record}`` per record (a :class:`PairRecords`), the context's
        histories cut once and each record's own cut (a record's value wins over the
        context's)."""
        context = self.clip(context, limits)
        clipped = [self.clip(r, limits) for r in records]
        # kept apart, so the predictor encodes the context (a history) once for all records
        return PairRecords(context, clipped) if context else clipped

    def _count(self, name: str, dropped: int) -> None:
        with self._lock:
            self.truncated[name] = self.truncated.get(name, 0) + 1
            self.dropped[name] = self.dropped.get(name, 0) + dropped

    def metric_values(self) -> dict[str, tuple[str, str, Mapping[str, float]]]:
        """The two counters for :meth:`adrank.serve.http_metrics.Metrics.render` (one
        sample per history column, as the ``reason`` label)."""
        with self._lock:
            truncated, dropped = dict(self.truncated), dict(self.dropped)
        return {
            "adrank_history_truncated_total": (
                "counter",
                "Request histories longer than max_len, cut to their newest items (by column).",
                truncated,
            ),
            "adrank_history_items_dropped_total": (
                "counter",
                "Oldest history items dropped by that truncation (by column).",
                dropped,
            ),
        }


def _user_side(model: SequenceModel) -> list[str]:
    """The sequence fields a sequence model encodes once per user."""
    return [f.name for f in model.feature_map.fields if f.kind == "sequence"]


def _same_rows(x: torch.Tensor) -> bool:
    """Whether every row of ``x`` equals the first (a broadcast view trivially does)."""
    return x.stride(0) == 0 or bool((x == x[:1]).all())


def score_rows(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``features`` (B rows); for a :class:`SequenceModel` whose B rows share at
    most :data:`MAX_USERS_PER_BATCH` distinct histories, each distinct history is encoded
    once (``encode_user``) and its rows scored with ``score``. Anything else: ``model``."""
    if not isinstance(model, SequenceModel):
        return model(features)
    names = _user_side(model)
    first = features[names[0]]
    rows = first.shape[0]
    if rows < 2:
        return model(features)
    if all(_same_rows(features[n]) for n in names):
        groups = torch.zeros(rows, dtype=torch.long)  # one user: the common request
        count = 1
    else:
        keys = torch.cat([features[n].reshape(rows, -1) for n in names], dim=1)
        _, groups = torch.unique(keys, dim=0, return_inverse=True)
        count = int(groups.max()) + 1
        if count > MAX_USERS_PER_BATCH or count * 2 > rows:
            return model(features)
    user_names = set(names)
    candidate = {k: v for k, v in features.items() if k not in user_names}
    out = torch.empty(rows, dtype=torch.float32, device=first.device)
    for g in range(count):
        index = (groups == g).nonzero().squeeze(1) if count > 1 else None
        user_row = int(index[0]) if index is not None else 0
        state = model.encode_user({k: v[user_row : user_row + 1] for k, v in features.items()})
        pick = candidate if index is None else {k: v[index] for k, v in candidate.items()}
        logits = model.score(state, pick).float()
        if index is None:
            out = logits
        else:
            out[index] = logits
    return out
