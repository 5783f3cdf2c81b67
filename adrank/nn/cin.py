"""Compressed Interaction Network (CIN) of xDeepFM (Lian et al., KDD 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.nn.mlp import check_widths


class CIN(nn.Module):
    """Vector-wise explicit interactions of bounded degree.

    Layer k takes the outer (Hadamard, per embedding dim) products of the base fields X_0
    (F maps) and the previous layer's H_{k-1} maps, and compresses the F * H_{k-1} products
    into ``layer_units[k]`` maps with a 1x1 convolution. Each layer's maps are sum-pooled
    over D; the pooled vectors are concatenated (the caller adds the output linear layer).

    Shapes: (B, F, D) -> (B, sum(layer_units)).
    """

    def __init__(self, num_fields: int, layer_units: Sequence[int]) -> None:
        super().__init__()
        units = list(layer_units)
        if not units:
            raise ValueError("CIN needs at least one layer (layer_units is empty)")
        check_widths(units, "cin_layer_units")  # a 0-map layer failed in forward
        self.layer_units = units
        self.output_dim = sum(units)
        previous = [num_fields, *units[:-1]]
        self.layers = nn.ModuleList(
            nn.Conv1d(num_fields * h_prev, h, kernel_size=1)
            for h_prev, h in zip(previous, units, strict=True)
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        batch, _, dim = emb.shape
        x = emb
        pooled: list[torch.Tensor] = []
        for conv in self.layers:
            z = torch.einsum("bfd,bhd->bfhd", emb, x).reshape(batch, -1, dim)  # (B, F*H, D)
            x = conv(z)  # (B, H_k, D)
            pooled.append(x.sum(dim=-1))  # (B, H_k)
        return torch.cat(pooled, dim=-1)
