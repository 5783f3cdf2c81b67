"""Columnar encoding of a ranking request: the context once, the candidates as columns.

Every scored (ad, creative) pair of a ``/v1/rank`` request is ``context ∪ ad.features ∪
creative.features`` (:mod:`adrank.serve.ranking`). Built as one dict per pair and encoded
field by field, the context's values are checked and looked up once per candidate, although
they are the same for all of them. :class:`PairRecords` keeps the two parts apart (it is
still a sequence of the merged records, for any scorer that wants those), and
:func:`encode_pairs` encodes a field that no candidate sets once and broadcasts it.

The fast path covers the common request: every value of a plain type for its field
(strings and integers for categorical fields, numbers for numeric ones); vocabulary
lookups, or the processor's own encoder for hashed and numeric fields, for the fields that
vary by candidate. A user's history in the context (a
delimited string, or a list of string/integer ids) is encoded once, by the processor's own
sequence encoder, and broadcast to every pair as a stride-0 view, which the sequence
scorer (:func:`adrank.serve.history.score_rows`) recognises as one user: so a request with
a history of L items costs O(L) in encoding, not O(L x candidates). Anything else (an
unknown or missing field, a value needing conversion, a history set by a candidate, a
derived feature's input) returns None and the caller takes the record-by-record path,
which raises the usual, located errors. The ids are exactly those of
:meth:`Predictor.encode_records` (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import torch

from adrank.data.histories import text_has_gaps
from adrank.data.schema import OOV_ID, SequenceFeature

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


def _plain(predictor: Predictor, record: Mapping[str, Any], histories: bool = False) -> bool:
    """Every value of ``record`` of a plain type for its field; with ``histories`` (the
    context), a sequence field may also hold a list of plain ids (no delimiter inside)."""
    kinds = predictor.field_kinds
    if not predictor.allow_unknown and not record.keys() <= predictor.allowed_fields:
        return False
    for name, value in record.items():
        kind = kinds.get(name)
        # bool, a subclass of int, is not plain: its type is checked exactly
        if kind is None or value is None or type(value) in _PLAIN[kind]:
            continue
        if not (histories and kind == "sequence" and type(value) is list):
            return False
        delimiter = predictor.delimiters.get(name, "|")
        if not all(type(x) is int or (type(x) is str and x and delimiter not in x) for x in value):
            return False  # the record path refuses it, naming the item
    return True


def _once(predictor: Predictor, feature: Any, value: Any, n: int) -> torch.Tensor:
    """The context's ``value`` of ``feature`` (a history, a hashed or numeric field) encoded
    once by the processor's encoder, as an (n,) or (n, L) stride-0 view: every pair shares
    the one row."""
    src = feature.source or feature.name
    if type(value) is list:  # a history as a list of plain ids (checked by _plain)
        value = predictor.delimiters.get(src, "|").join(str(x) for x in value)
    encoded = predictor._encode_other([{src: value}], [feature])[feature.name]
    return encoded.expand(n, *encoded.shape[1:])


def _check_aligned_context(
    predictor: Predictor, context: Mapping[str, Any], varying: set[str]
) -> None:
    """The context's aligned histories hold as many items each (they are encoded one field
    at a time below, so the processor's own check never sees them together); a
    :class:`~adrank.serve.predictor.RecordError` on the context's field otherwise. Counted
    in Python, as the processor counts them (empty tokens are not items): one request."""
    from adrank.serve.predictor import RecordError

    for f in predictor.processor.schema.features:
        if not isinstance(f, SequenceFeature) or not f.aligned_with:
            continue
        other = predictor.processor.schema.feature(f.aligned_with)
        mine, theirs = f.source or f.name, other.source or other.name
        if mine in varying or theirs in varying:
            continue  # a candidate's own history: the record path checks it
        a = _items(context.get(mine), f.delimiter)
        b = _items(context.get(theirs), getattr(other, "delimiter", f.delimiter))
        for column, delimiter in (
            (mine, f.delimiter),
            (theirs, getattr(other, "delimiter", f.delimiter)),
        ):
            value = context.get(column)
            if isinstance(value, str) and text_has_gaps(value, delimiter):
                raise RecordError(
                    f"history {column!r} has an empty item ({value!r}); an aligned history "
                    "pairs items by position, so every item must be given",
                    field=column,
                    index=0,
                )
        if a != b:
            raise RecordError(
                f"history {mine!r} has {a} item(s) but {theirs!r}, which it is aligned with, "
                f"has {b}: aligned histories give one value per event, so their lengths must "
                "match",
                field=mine,
                index=0,
            )


def _items(value: Any, delimiter: str) -> int:
    """Items of a history value (a list, delimited text or None)."""
    if value is None:
        return 0
    tokens = value if type(value) is list else str(value).split(delimiter)
    return sum(1 for t in tokens if str(t) != "")


def encode_pairs(predictor: Predictor, pairs: PairRecords) -> dict[str, torch.Tensor] | None:
    """Model input tensors for ``pairs`` with the context encoded once, or None when the
    request needs the record-by-record path (see the module docstring)."""
    context, rows = pairs.context, pairs.rows
    n = len(rows)
    if n == 0 or not _plain(predictor, context, histories=True):
        return None
    varying: set[str] = set()
    for row in rows:
        if not _plain(predictor, row):
            return None
        varying.update(row.keys())
    missing = [n for n in predictor.required_fields if n not in context]
    if missing and any(name not in row for row in rows for name in missing):
        return None
    _check_aligned_context(predictor, context, varying)
    out: dict[str, torch.Tensor] = {}
    for f in predictor.processor.schema.features:
        lookup = predictor._lookups.get(f.name)
        src = f.source or f.name
        if src in predictor.derived:
            return None  # derived features: the record path encodes them
        if src not in varying:  # the same for every pair: encoded once
            if lookup is None:  # a history, a hashed or numeric field: the processor's encoder
                out[f.name] = _once(predictor, f, context.get(src), n)
                continue
            v = context.get(src)
            value = OOV_ID if v is None else lookup.get(str(v), OOV_ID)
            out[f.name] = torch.full((n,), value, dtype=torch.int64)
        elif isinstance(f, SequenceFeature):
            return None  # a candidate's own history: the record path
        elif lookup is None:  # hashed or numeric, per pair: one column through the encoder
            default = context.get(src)
            column = [{src: row.get(src, default)} for row in rows]
            out[f.name] = predictor._encode_other(column, [f])[f.name]
        else:
            default = context.get(src)
            ids = [
                OOV_ID if (v := row.get(src, default)) is None else lookup.get(str(v), OOV_ID)
                for row in rows
            ]
            out[f.name] = torch.tensor(ids, dtype=torch.int64)
    return out
