"""Columnar encoding of a ranking request: the context once, the candidates as columns.

Every scored (ad, creative) pair of a ``/v1/rank`` request is ``context ∪ ad.features ∪
creative.features`` (:mod:`adrank.serve.ranking`). Built as one dict per pair and encoded
field by field, the context's values are checked and looked up once per candidate, although
they are the same for all of them. :class:`PairRecords` keeps the two parts apart (it is
still a sequence of the merged records, for any scorer that wants those), and
:func:`encode_pairs` encodes a field that no candidate sets once and broadcasts it.

The fast path covers the common request: every value of a plain type for its field
(strings and integers for categorical fields, numbers for numeric ones) and vocabulary
lookups for the fields that vary by candidate. Anything else (an unknown or missing field,
a value needing conversion, a list-valued history, a derived feature's input) returns None
and the caller takes the record-by-record path, which raises the usual, located errors.
The ids are exactly those of :meth:`Predictor.encode_records` (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import torch

from adrank.data.schema import OOV_ID

if TYPE_CHECKING:
    from adrank.serve.predictor import Predictor

#: Value types accepted without conversion, by field kind (as ``Predictor.check_records``).
_PLAIN: dict[str, tuple[type, ...]] = {
    "categorical": (str, int),
    "numeric": (int, float),
    "sequence": (str,),
}


class PairRecords(Sequence[Mapping[str, Any]]):
    """The records of a request's scored pairs, ``{**context, **rows[i]}``, kept as the
    shared ``context`` and the per-pair ``rows`` (merged only when indexed)."""

    def __init__(self, context: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
        self.context = context
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[Mapping[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> Mapping[str, Any] | list[Mapping[str, Any]]:
        if isinstance(i, slice):
            return [{**self.context, **row} for row in self.rows[i]]
        return {**self.context, **self.rows[i]}

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        context = self.context
        return ({**context, **row} for row in self.rows)


def _plain(predictor: Predictor, record: Mapping[str, Any]) -> bool:
    kinds = predictor.field_kinds
    if not predictor.allow_unknown and not record.keys() <= predictor.allowed_fields:
        return False
    for name, value in record.items():
        kind = kinds.get(name)
        # bool, a subclass of int, is not plain: its type is checked exactly
        if kind is not None and value is not None and type(value) not in _PLAIN[kind]:
            return False
    return True


def encode_pairs(predictor: Predictor, pairs: PairRecords) -> dict[str, torch.Tensor] | None:
    """Model input tensors for ``pairs`` with the context encoded once, or None when the
    request needs the record-by-record path (see the module docstring)."""
    context, rows = pairs.context, pairs.rows
    n = len(rows)
    if n == 0 or not _plain(predictor, context):
        return None
    varying: set[str] = set()
    for row in rows:
        if not _plain(predictor, row):
            return None
        varying.update(row.keys())
    missing = [n for n in predictor.required_fields if n not in context]
    if missing and any(name not in row for row in rows for name in missing):
        return None
    out: dict[str, torch.Tensor] = {}
    for f in predictor.processor.schema.features:
        lookup = predictor._lookups.get(f.name)
        src = f.source or f.name
        if lookup is None or src in predictor.derived:
            return None  # numeric, hashed or derived features: the record path encodes them
        if src in varying:
            default = context.get(src)
            ids = [
                OOV_ID if (v := row.get(src, default)) is None else lookup.get(str(v), OOV_ID)
                for row in rows
            ]
            out[f.name] = torch.tensor(ids, dtype=torch.int64)
        else:
            v = context.get(src)
            value = OOV_ID if v is None else lookup.get(str(v), OOV_ID)
            out[f.name] = torch.full((n,), value, dtype=torch.int64)
    return out
