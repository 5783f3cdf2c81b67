"""Embedding tables that grow: reserved capacity, moving rows into a bigger model, resetting
rows for newly admitted or re-used ids.

A model's tables are sized by its feature map. In a stream the feature map's ``vocab_size``
of a growing table is its **capacity** (:func:`capacity_feature_map`), larger than the
processor's vocabulary, so most admissions just start using a reserved row: no tensor
changes shape. Only when a table's capacity runs out is a bigger model built
(:func:`grow_model`); every id keeps its number, and its row's weights and optimizer
state (:func:`grow_optimizer_state`) are copied over unchanged. Rows of ids admitted since
the last step are re-initialised with their optimizer state (:func:`reset_rows`).

Row layout: :class:`~adrank.nn.embedding.FeatureEmbedding` fuses same-dim tables into one
``nn.Embedding`` at per-table offsets; :func:`table_rows` finds, for every table of every
``FeatureEmbedding`` of a model, the parameter and the row range that hold it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.nn.embedding import FeatureEmbedding
from adrank.train.optim import SparseDenseAdam
from adrank.train.row_adam import RowAdam

logger = logging.getLogger(__name__)

__all__ = [
    "TableRows",
    "capacity_feature_map",
    "grow_model",
    "grow_optimizer_state",
    "grow_row_state",
    "reset_rows",
    "table_rows",
]


@dataclass(frozen=True)
class TableRows:
    """Table ``table`` of one ``FeatureEmbedding``: rows ``offset .. offset + rows`` of the
    parameter named ``param`` (a name in ``model.state_dict()``)."""

    param: str
    table: str
    offset: int
    rows: int
    init_std: float


def table_rows(model: nn.Module) -> list[TableRows]:
    """Where every embedding table of ``model`` lives (all ``FeatureEmbedding`` modules)."""
    out: list[TableRows] = []
    for name, module in model.named_modules():
        if not isinstance(module, FeatureEmbedding):
            continue
        prefix = f"{name}." if name else ""
        offsets = sorted(module._offsets.items(), key=lambda kv: kv[1])
        ends = [o for _, o in offsets[1:]] + [module.fused.num_embeddings]
        for (table, offset), end in zip(offsets, ends, strict=True):
            out.append(
                TableRows(f"{prefix}fused.weight", table, offset, end - offset, module.init_std)
            )
        for table, emb in module.extra_tables.items():
            out.append(
                TableRows(
                    f"{prefix}extra_tables.{table}.weight",
                    table,
                    0,
                    emb.num_embeddings,
                    module.init_std,
                )
            )
    return out


def capacity_feature_map(feature_map: FeatureMap, capacity: dict[str, int]) -> FeatureMap:
    """``feature_map`` with the ``vocab_size`` of every field of a table in ``capacity``
    set to that capacity (rows, padding and OOV included)."""
    fields = tuple(
        dataclasses.replace(f, vocab_size=capacity[f.table])
        if f.kind != "numeric" and f.table in capacity
        else f
        for f in feature_map.fields
    )
    return dataclasses.replace(feature_map, fields=fields)


def _row_maps(old: nn.Module, new: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per grown parameter: (old row indices, new row indices) of every kept row."""
    new_rows = {(t.param, t.table): t for t in table_rows(new)}
    maps: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for t in table_rows(old):
        target = new_rows.get((t.param, t.table))
        if target is None:
            raise ValueError(f"table {t.table!r} of {t.param!r} is missing from the grown model")
        if target.rows < t.rows:
            raise ValueError(
                f"table {t.table!r} would shrink from {t.rows} to {target.rows} rows; tables "
                "only grow (evicted ids free rows for re-use instead)"
            )
        src, dst = maps.setdefault(t.param, ([], []))
        src.append(torch.arange(t.offset, t.offset + t.rows))
        dst.append(torch.arange(target.offset, target.offset + t.rows))
    return {k: (torch.cat(s), torch.cat(d)) for k, (s, d) in maps.items()}


@torch.no_grad()
def grow_model(old: nn.Module, new: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Copy ``old``'s weights into ``new`` (same architecture, tables at least as large):
    every table row goes to the same id's row in ``new``; rows beyond the old capacity keep
    ``new``'s initialisation. Returns the row maps (for :func:`grow_optimizer_state`)."""
    maps = _row_maps(old, new)
    old_state, new_state = old.state_dict(), new.state_dict()
    for key, value in old_state.items():
        target = new_state.get(key)
        if target is None:
            raise ValueError(f"{key!r} is missing from the grown model")
        if key in maps:
            src, dst = maps[key]
            target[dst.to(target.device)] = value[src.to(value.device)].to(target.device)
        elif target.shape != value.shape:
            raise ValueError(
                f"{key!r} changed shape from {tuple(value.shape)} to {tuple(target.shape)} "
                "and is not an embedding table: only tables can grow"
            )
        else:
            target.copy_(value)
    return maps


def _sparse_params(optimizer: SparseDenseAdam) -> list[torch.Tensor]:
    return [p for g in optimizer.sparse.param_groups for p in g["params"]]


def grow_optimizer_state(
    old_optimizer: SparseDenseAdam,
    old_model: nn.Module,
    new_optimizer: SparseDenseAdam,
    new_model: nn.Module,
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Move ``old_optimizer``'s state to ``new_optimizer`` (built on ``new_model`` after
    :func:`grow_model`): dense parameters as they are, each table row's moments and step
    count to the same id's row; rows beyond the old capacity start with no state."""
    if not isinstance(new_optimizer.sparse, RowAdam):
        raise TypeError("growing tables needs RowAdam for the tables (row_steps=True)")
    if old_optimizer.dense is not None and new_optimizer.dense is not None:
        new_optimizer.dense.load_state_dict(old_optimizer.dense.state_dict())
    old_names = {id(p): n for n, p in old_model.named_parameters()}
    new_params = dict(new_model.named_parameters())
    for p in _sparse_params(old_optimizer):
        state = old_optimizer.sparse.state.get(p)
        if not state:
            continue
        name = old_names[id(p)]
        q = new_params[name]
        src, dst = maps.get(name, (None, None))
        new_optimizer.sparse.state[q] = grow_row_state(state, q.shape[0], src, dst)


def grow_row_state(
    state: dict[str, Any],
    rows: int,
    src: torch.Tensor | None,
    dst: torch.Tensor | None,
) -> dict[str, Any]:
    """:class:`RowAdam` state of a table moved to a table of ``rows`` rows: row ``src[i]``
    goes to row ``dst[i]``, other rows start at zero (``src=None``: copied as it is)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if src is None or dst is None:
            out[key] = value.clone()
            continue
        grown = torch.zeros((rows, *value.shape[1:]), dtype=value.dtype, device=value.device)
        grown[dst.to(value.device)] = value[src.to(value.device)]
        out[key] = grown
    return out


@torch.no_grad()
def reset_rows(
    model: nn.Module,
    optimizer: SparseDenseAdam | None,
    table: str,
    ids: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    weights: bool = True,
) -> None:
    """Give ids ``ids`` of ``table`` fresh rows in every ``FeatureEmbedding`` of ``model``:
    normal(0, init_std) weights (unless ``weights=False``) and (for :class:`RowAdam`) no
    moments and step 0."""
    if ids.numel() == 0:
        return
    params = dict(model.named_parameters())
    for t in table_rows(model):
        if t.table != table:
            continue
        if int(ids.max()) >= t.rows:
            raise ValueError(
                f"id {int(ids.max())} of table {table!r} is beyond its {t.rows} rows; grow the "
                "model first"
            )
        p = params[t.param]
        rows = (ids + t.offset).to(p.device)
        if weights:
            fresh = torch.randn((len(rows), p.shape[1]), generator=generator) * t.init_std
            p[rows] = fresh.to(p.device, p.dtype)
        if optimizer is not None and isinstance(optimizer.sparse, RowAdam):
            optimizer.sparse.reset_rows(p, rows)
