"""EDCN (Chen et al., "Enhancing Explicit and Implicit Feature Interactions via Information
Sharing for Parallel Deep CTR Models", CIKM 2021): DCN's cross and deep towers exchange
information after every layer through a bridge module, and a regulation module gives each
tower its own field-wise soft gating of the shared input."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.cross import CrossInteraction
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock

BridgeType = Literal["hadamard_product", "pointwise_addition", "concatenation", "attention_pooling"]
_BRIDGES = ("hadamard_product", "pointwise_addition", "concatenation", "attention_pooling")


class BridgeModule(nn.Module):
    """Fuses the cross output c and the deep output h (both (B, d)) into (B, d)."""

    def __init__(self, dim: int, bridge_type: BridgeType) -> None:
        super().__init__()
        if bridge_type not in _BRIDGES:
            raise ValueError(f"bridge_type={bridge_type!r} is not supported; use one of {_BRIDGES}")
        self.bridge_type = bridge_type
        if bridge_type == "concatenation":
            self.proj = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        elif bridge_type == "attention_pooling":

            def attention() -> nn.Module:
                return nn.Sequential(
                    nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Softmax(-1)
                )

            self.attention_cross = attention()
            self.attention_deep = attention()

    def forward(self, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.bridge_type == "hadamard_product":
            return c * h
        if self.bridge_type == "pointwise_addition":
            return c + h
        if self.bridge_type == "concatenation":
            return self.proj(torch.cat([c, h], dim=-1))
        return self.attention_cross(c) * c + self.attention_deep(h) * h


class RegulationModule(nn.Module):
    """Splits x (B, F*D) into a cross input and a deep input, each scaled by its own field
    gate softmax(g / temperature) (F weights repeated over D), then optional BatchNorm."""

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        temperature: float,
        use_gate: bool,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.temperature = temperature
        self.gates = nn.Parameter(torch.ones(2, num_fields)) if use_gate else None
        dim = num_fields * embedding_dim
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(dim) if batch_norm else nn.Identity() for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gates is None:
            cross, deep = x, x
        else:
            g = (self.gates / self.temperature).softmax(dim=-1)  # (2, F)
            g = g.repeat_interleave(self.embedding_dim, dim=-1)  # (2, F*D)
            cross, deep = x * g[0], x * g[1]
        return self.norms[0](cross), self.norms[1](deep)


@register("edcn")
class EDCN(CTRModel):
    """Per layer l: (c, h) = regulation_l(input_l); c_l = c_0 * (c . w_l) + b_l + c;
    h_l = MLP_l(h) (d -> d); bridge_l = bridge(c_l, h_l); input_{l+1} = bridge_l.
    logit = w^T [c_L; h_L; bridge_L] + b, with d = F*D and input_0 = flatten(E).

    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_cross_layers: int = 3,
        hidden_activations: str = "relu",
        bridge_type: BridgeType = "hadamard_product",
        use_regulation_module: bool = True,
        temperature: float = 5.0,
        net_dropout: float = 0.3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        if num_cross_layers < 1:
            raise ValueError(f"num_cross_layers must be >= 1, got {num_cross_layers}")
        if not temperature > 0:  # 0: NaN gates; < 0: the field gate's softmax inverted
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        num_fields = feature_map.num_fields
        dim = num_fields * embedding_dim
        layers = range(num_cross_layers)
        self.cross_layers = nn.ModuleList(CrossInteraction(dim) for _ in layers)
        self.dense_layers = nn.ModuleList(
            MLPBlock(dim, [dim], hidden_activations, dropout=net_dropout) for _ in layers
        )
        self.bridges = nn.ModuleList(BridgeModule(dim, bridge_type) for _ in layers)
        self.regulations = nn.ModuleList(
            RegulationModule(
                num_fields, embedding_dim, temperature, use_regulation_module, batch_norm
            )
            for _ in layers
        )
        self.fc = nn.Linear(3 * dim, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(features).flatten(1)  # (B, F*D)
        cross0 = None
        for regulation, cross, dense, bridge in zip(
            self.regulations, self.cross_layers, self.dense_layers, self.bridges, strict=True
        ):
            c, h = regulation(x)
            if cross0 is None:
                cross0 = c
            c = c + cross(cross0, c)
            h = dense(h)
            x = bridge(c, h)
        return self.fc(torch.cat([c, h, x], dim=-1)).squeeze(-1)
