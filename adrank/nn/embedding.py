"""Feature embeddings shared by every model.

``FeatureEmbedding`` turns a feature dict into field embeddings (B, F, D):

* categorical fields: one row of a table (fields that share a vocabulary share a table);
* numeric fields: the value times a learned per-field vector (FuxiCTR/DeepCTR style);
* sequence fields: mean of the non-padding item embeddings (use :meth:`lookup_sequence`
  for models that attend over the sequence).

All tables with the default dim are fused into one ``nn.Embedding`` with per-table row
offsets, so a batch needs a single gather for all categorical fields.
"""

from __future__ import annotations

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.data.schema import PAD_ID


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
        for f, d in zip(chosen, self.dims, strict=True):
            if f.kind == "numeric":
                continue
            owner = feature_map.field(f.table) if f.table in feature_map.names else f
            table_vocab[f.table] = max(table_vocab.get(f.table, 0), owner.vocab_size, f.vocab_size)
            table_dim[f.table] = d
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
        return self.extra_tables[table](ids)

    def lookup_sequence(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Embed a (B, L) id tensor of field ``name``'s table -> (B, L, D); padding rows are 0."""
        field = next(f for f in self.fields if f.name == name)
        return self._lookup(field.table, ids)

    def _embed_each(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self._fused_cat_names:
            ids = torch.stack([features[n] for n in self._fused_cat_names], dim=1)  # (B, Fc)
            emb = self.fused(ids + self.fused_cat_offsets)  # (B, Fc, D)
            for i, n in enumerate(self._fused_cat_names):
                out[n] = emb[:, i]
        for f in self.fields:
            if f.name in out:
                continue
            x = features[f.name]
            if f.kind == "numeric":
                out[f.name] = x.unsqueeze(-1) * self.numeric_weight[f.name]  # (B, D)
            elif f.kind == "categorical":
                out[f.name] = self._lookup(f.table, x)
            else:  # sequence: mean over non-padding positions
                seq = self._lookup(f.table, x)  # (B, L, D)
                mask = (x != PAD_ID).unsqueeze(-1).to(seq.dtype)
                out[f.name] = (seq * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return out

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
