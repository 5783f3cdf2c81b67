"""Feature embeddings shared by every model.

``FeatureEmbedding`` turns a feature dict into field embeddings (B, F, D):

* categorical fields: one row of a table (fields that share a vocabulary share a table);
* numeric fields: the value times a learned per-field vector (FuxiCTR/DeepCTR style);
* sequence fields: in ``forward``/``forward_flat``, the mean of the non-padding item
  embeddings (what every history-free model has always seen).

Pooled and unpooled embeddings are different shapes (TorchRec's lesson), so sequence models
ask for what they need and choose their own pooling (:mod:`adrank.nn.pooling`):

* :meth:`FeatureEmbedding.embed_fields`: one (B, D) vector per categorical/numeric field;
* :meth:`FeatureEmbedding.embed_sequence`: a :class:`SequenceEmbedding`, values (B, L, D)
  and mask (B, L) (``True`` = a real item, ``False`` = padding id 0);
* :meth:`FeatureEmbedding.embed_history`: a :class:`History`, a behaviour history with all
  its aligned attributes concatenated per position (B, L, D·A), its mask, and the target
  item's matching vector (B, D·A).

All tables with the default dim are fused into one ``nn.Embedding`` with per-table row
offsets, so a batch needs a single gather for all categorical fields.

Pretrained fields (``FieldInfo.vectors_dim > 0``) and the sequences that share their table
look up :class:`~adrank.nn.pretrained.PretrainedTable` instead: the feature map's vectors,
frozen or fine-tuned, projected to D when their dim differs. The embedding regularizer
(:meth:`FeatureEmbedding.l2_penalty`) leaves them out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.data.schema import PAD_ID
from adrank.nn.pooling import pool_sequence
from adrank.nn.pretrained import PretrainedTable


class SequenceEmbedding(NamedTuple):
    """An unpooled sequence: ``values`` (B, L, D) and ``mask`` (B, L) bool, ``True`` where
    the id is a real item (not padding). Values at padded positions are the padding row
    (zeros at init) and must never be attended; layers use ``mask``, not the values."""

    values: torch.Tensor
    mask: torch.Tensor


class History(NamedTuple):
    """A behaviour history with its aligned attributes, ready for target attention.

    Attributes:
        values: (B, L, D·A) per-position concatenation of the A attribute embeddings, in
            :attr:`attributes` order (the history field first).
        mask: (B, L) bool, ``True`` = a real behaviour (from the history field's ids).
        target: (B, D·A) the target item's vector, attribute by attribute (see
            :meth:`FeatureEmbedding.history_target_fields`; a missing part is zeros).
        attributes: the sequence fields concatenated, e.g. ``("hist_item_id", "hist_genre")``.
    """

    values: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor
    attributes: tuple[str, ...]


class FeatureEmbedding(nn.Module):
    """Embed all (or a subset of) fields of a feature map.

    Args:
        feature_map: the inputs.
        embedding_dim: D for every field (per-field ``embedding_dim`` in the feature map
            is honoured only when ``use_field_dims`` is True, and then only
            :meth:`forward_flat` may be used).
        fields: optional subset of field names, in the order to embed.
        use_field_dims: honour per-field embedding dims.
        init_std: normal init std for embedding rows (padding row stays zero).

    Shapes: ``forward`` returns (B, F, D); ``forward_flat`` returns (B, sum of dims).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        fields: list[str] | None = None,
        use_field_dims: bool = False,
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.embedding_dim = embedding_dim
        chosen = [feature_map.field(n) for n in fields] if fields else list(feature_map.fields)
        if not chosen:
            raise ValueError("FeatureEmbedding needs at least one field")
        self.fields: list[FieldInfo] = chosen
        self.field_names = [f.name for f in chosen]
        self.dims = [
            (f.embedding_dim or embedding_dim) if use_field_dims else embedding_dim for f in chosen
        ]

        # Tables: every distinct embedding group among categorical/sequence fields.
        table_vocab: dict[str, int] = {}
        table_dim: dict[str, int] = {}
        pretrained: dict[str, FieldInfo] = {}
        for f, d in zip(chosen, self.dims, strict=True):
            if f.kind == "numeric":
                continue
            owner = feature_map.field(f.table) if f.table in feature_map.names else f
            if owner.vectors_dim:
                pretrained[f.table] = owner
            table_vocab[f.table] = max(table_vocab.get(f.table, 0), owner.vocab_size, f.vocab_size)
            table_dim[f.table] = d
        self.pretrained = nn.ModuleDict(
            {
                t: PretrainedTable(
                    _vectors_of(feature_map, owner, table_vocab[t]),
                    table_dim[t],
                    owner.freeze,
                    init_std,
                )
                for t, owner in pretrained.items()
            }
        )
        for t in pretrained:
            del table_vocab[t]
        fused = [t for t in table_vocab if table_dim[t] == embedding_dim]
        self._offsets: dict[str, int] = {}
        total = 0
        for t in fused:
            self._offsets[t] = total
            total += table_vocab[t]
        self.fused = nn.Embedding(max(total, 1), embedding_dim)
        self.extra_tables = nn.ModuleDict(
            {t: nn.Embedding(table_vocab[t], table_dim[t]) for t in table_vocab if t not in fused}
        )
        numeric = [f for f in chosen if f.kind == "numeric"]
        self.numeric_names = [f.name for f in numeric]
        numeric_dims = {d for f, d in zip(chosen, self.dims, strict=True) if f.kind == "numeric"}
        #: several numeric fields of one dim: embedded in one multiplication (_embed_numeric)
        self._numeric_together = len(numeric) > 1 and len(numeric_dims) == 1
        self.numeric_weight = nn.ParameterDict(
            {
                f.name: nn.Parameter(torch.empty(d))
                for f, d in zip(chosen, self.dims, strict=True)
                if f.kind == "numeric"
            }
        )
        cat = [f for f in chosen if f.kind == "categorical" and f.table in self._offsets]
        self._fused_cat_names = [f.name for f in cat]
        self.register_buffer(
            "fused_cat_offsets",
            torch.tensor([self._offsets[f.table] for f in cat], dtype=torch.long),
            persistent=False,
        )
        self.init_std = init_std
        self._all_fields = {f.name: f for f in feature_map.fields}
        self.sequence_names = [f.name for f in chosen if f.kind == "sequence"]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        tables = [self.fused, *self.extra_tables.values()]
        for emb in tables:
            nn.init.normal_(emb.weight, std=self.init_std)
        with torch.no_grad():
            for off in self._offsets.values():
                self.fused.weight[off + PAD_ID].zero_()
            for emb in self.extra_tables.values():
                emb.weight[PAD_ID].zero_()
        for p in self.numeric_weight.values():
            nn.init.normal_(p, std=self.init_std)
        for table in self.pretrained.values():
            table.reset_parameters()

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def output_dim(self) -> int:
        """Width of :meth:`forward_flat`."""
        return sum(self.dims)

    def _lookup(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        if table in self._offsets:
            return self.fused(ids + self._offsets[table])
        if table in self.pretrained:
            return self.pretrained[table](ids)
        return self.extra_tables[table](ids)

    def _field(self, name: str) -> FieldInfo:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"field {name!r} is not embedded here; embedded: {self.field_names}")

    def lookup_sequence(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Embed a (B, L) id tensor of field ``name``'s table -> (B, L, D); padding rows are 0."""
        return self._lookup(self._field(name).table, ids)

    def embed_fields(
        self, features: dict[str, torch.Tensor], names: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-field vectors (B, D_f) of categorical and numeric fields, in field order.

        ``names`` picks fields (default: every non-sequence field embedded here); naming a
        sequence field is an error (use :meth:`embed_sequence` and pool it yourself).
        """
        if names is None:
            names = [n for n in self.field_names if n not in self.sequence_names]
        for n in names:
            if self._field(n).kind == "sequence":
                raise ValueError(
                    f"field {n!r} is a sequence: use embed_sequence/embed_history, not embed_fields"
                )
        each = self._embed_each(features, pool=False)
        return {n: each[n] for n in names}

    def embed_sequence(self, features: dict[str, torch.Tensor], name: str) -> SequenceEmbedding:
        """The unpooled sequence field ``name``: values (B, L, D), mask (B, L) bool."""
        field = self._field(name)
        if field.kind != "sequence":
            raise ValueError(f"field {name!r} is {field.kind}, not a sequence")
        ids = features[name]
        if ids.dim() != 2:
            raise ValueError(f"sequence field {name!r} must be (B, L) ids, got {tuple(ids.shape)}")
        return SequenceEmbedding(self._lookup(field.table, ids), ids != PAD_ID)

    def history_fields(self) -> list[str]:
        """Primary history fields: embedded sequence fields not aligned with another one."""
        return [n for n in self.sequence_names if not self._field(n).aligned_with]

    def history_attributes(self, name: str) -> tuple[str, ...]:
        """``name`` then every embedded sequence aligned with it, in field order."""
        field = self._field(name)
        if field.kind != "sequence":
            raise ValueError(f"field {name!r} is {field.kind}, not a history (sequence)")
        if field.aligned_with:
            raise ValueError(
                f"sequence {name!r} is aligned with {field.aligned_with!r}: ask for the "
                f"history {field.aligned_with!r}, which includes it"
            )
        aligned = [n for n in self.sequence_names if self._field(n).aligned_with == name]
        return (name, *aligned)

    def history_target_fields(self, name: str) -> tuple[str | None, ...]:
        """For each attribute of history ``name``, the categorical field holding the target
        item's value of that attribute, or ``None`` when the feature map declares none.

        An attribute's target is its declared ``target``; otherwise the one categorical
        field sharing its embedding table (``hist_genre`` -> ``genre``). With none (or an
        ambiguous several), the target's part for that attribute is zeros, so a history
        without any target (``target=None``, no matching field) gets a zero target vector.
        """
        out: list[str | None] = []
        for attr in self.history_attributes(name):
            field = self._field(attr)
            if field.target:
                out.append(field.target)
                continue
            same = [
                f.name
                for f in self._all_fields.values()
                if f.kind == "categorical" and f.table == field.table
            ]
            out.append(same[0] if len(same) == 1 else None)
        return tuple(out)

    def embed_history_target(self, features: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The target's vector (B, D·A) matching history ``name``'s attributes (see
        :meth:`history_target_fields`; a part without a target field is zeros). It needs
        only the target fields, so a request can embed its user's history once and its K
        candidates' targets apart."""
        attributes = self.history_attributes(name)
        targets = self.history_target_fields(name)
        given = [features[t] for t in targets if t is not None]
        batch = given[0].shape[0] if given else features[name].shape[0]
        parts: list[torch.Tensor] = []
        for attr, target in zip(attributes, targets, strict=True):
            if target is None:
                width = self.dims[self.field_names.index(attr)]
                parts.append(self.fused.weight.new_zeros(batch, width))
            else:
                parts.append(self._lookup(self._field(attr).table, features[target]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def embed_history(self, features: dict[str, torch.Tensor], name: str) -> History:
        """History ``name`` with its aligned attributes and its target (see :class:`History`).

        The mask comes from ``name``'s ids; target parts are looked up in the attribute's
        table, so the target field itself need not be embedded here.
        """
        attributes = self.history_attributes(name)
        seqs = [self.embed_sequence(features, a) for a in attributes]
        values = seqs[0].values if len(seqs) == 1 else torch.cat([s.values for s in seqs], -1)
        target = self.embed_history_target(features, name)
        return History(values, seqs[0].mask, target, attributes)

    def _embed_each(
        self, features: dict[str, torch.Tensor], pool: bool = True
    ) -> dict[str, torch.Tensor]:
        """Field name -> (B, D_f); sequence fields are mean-pooled (skipped without ``pool``)."""
        out: dict[str, torch.Tensor] = {}
        if self._fused_cat_names:
            ids = torch.stack([features[n] for n in self._fused_cat_names], dim=1)  # (B, Fc)
            emb = self.fused(ids + self.fused_cat_offsets)  # (B, Fc, D)
            # unbind, not emb[:, i]: its backward is one stack, where Fc selects would each
            # write a zero-filled (B, Fc, D) gradient and add it (the same values)
            for n, field_emb in zip(self._fused_cat_names, emb.unbind(1), strict=True):
                out[n] = field_emb
        if self.numeric_names:
            out.update(self._embed_numeric(features))
        for f in self.fields:
            if f.name in out or (f.kind == "sequence" and not pool):
                continue  # unpooled: sequence ids need not even be given (embed_fields)
            x = features[f.name]
            if f.kind == "categorical":
                out[f.name] = self._lookup(f.table, x)
            elif pool:  # sequence: mean over non-padding positions
                seq = self.embed_sequence(features, f.name)
                out[f.name] = pool_sequence(seq.values, seq.mask, "mean")
        return out

    def _embed_numeric(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Numeric field name -> (B, D_f): the value times the field's vector.

        Fields of one dim are embedded together: their values stacked (B, Fn) times their
        vectors stacked (Fn, D), one multiplication forward and one multiply-and-sum
        backward for all of them, instead of one per field (Criteo has 13, AliExpress 63;
        at small batches on a GPU each is a kernel launch the host pays for). The products
        are the same numbers bit for bit; the vectors' gradients are the same sums over the
        batch, added in another order, so they can differ in the last bits from the
        one-field-at-a-time sums adrank used before (``tests/nn/test_embedding.py``).
        """
        weights = [self.numeric_weight[n] for n in self.numeric_names]
        if not self._numeric_together:
            return {
                n: features[n].unsqueeze(-1) * w
                for n, w in zip(self.numeric_names, weights, strict=True)
            }
        x = torch.stack([features[n] for n in self.numeric_names], dim=1)  # (B, Fn)
        emb = x.unsqueeze(-1) * torch.stack(weights)  # (B, Fn, D)
        return dict(zip(self.numeric_names, emb.unbind(1), strict=True))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, F, D) field embeddings in field order."""
        if len(set(self.dims)) > 1:
            raise ValueError(
                "fields have different embedding dims; models that stack fields need one dim"
            )
        if self._fused_cat_names and len(self._fused_cat_names) == len(self.fields):
            ids = torch.stack([features[n] for n in self._fused_cat_names], dim=1)
            return self.fused(ids + self.fused_cat_offsets)  # fast path: one gather
        each = self._embed_each(features)
        return torch.stack([each[n] for n in self.field_names], dim=1)

    def forward_flat(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, sum of dims): field embeddings concatenated."""
        each = self._embed_each(features)
        return torch.cat([each[n] for n in self.field_names], dim=-1)

    def l2_penalty(self, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Squared L2 norm of embedding rows.

        With ``features`` given, only the rows used by this batch count (each distinct row
        once); otherwise every row of every table counts (FuxiCTR's "table" scope).
        """
        if features is None:
            total = sum(
                (t.weight.pow(2).sum() for t in [self.fused, *self.extra_tables.values()]),
                torch.zeros((), device=self.fused.weight.device),
            )
            for p in self.numeric_weight.values():
                total = total + p.pow(2).sum()
            return total
        total = torch.zeros((), device=self.fused.weight.device)
        fused_rows: list[torch.Tensor] = []
        extra_rows: dict[str, list[torch.Tensor]] = {}
        for f in self.fields:
            if f.kind == "numeric":
                total = total + self.numeric_weight[f.name].pow(2).sum()
                continue
            if f.table in self.pretrained:
                continue
            ids = features[f.name].reshape(-1)
            if f.table in self._offsets:
                fused_rows.append(ids + self._offsets[f.table])
            else:
                extra_rows.setdefault(f.table, []).append(ids)
        if fused_rows:
            rows = torch.unique(torch.cat(fused_rows))
            total = total + self.fused(rows).pow(2).sum()
        for t, parts in extra_rows.items():
            rows = torch.unique(torch.cat(parts))
            total = total + self.extra_tables[t](rows).pow(2).sum()
        return total


def _vectors_of(feature_map: FeatureMap, owner: FieldInfo, vocab_size: int) -> object:
    """The pretrained table of ``owner`` from the feature map, checked against its shape."""
    table = feature_map.vectors.get(owner.name)
    if table is None:
        raise ValueError(
            f"pretrained field {owner.name!r}: the feature map carries no vectors; use the "
            "one from FeatureProcessor.feature_map() or FeatureMap.load() (which reads "
            "them from the file next to feature_map.json)"
        )
    expected = (vocab_size, owner.vectors_dim)
    if tuple(table.shape) != expected:
        raise ValueError(
            f"pretrained field {owner.name!r}: vectors of shape {tuple(table.shape)}, the "
            f"feature map expects {expected} (vocabulary size, vectors_dim)"
        )
    return table
