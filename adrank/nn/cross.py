"""Cross networks of the DCN family.

* :class:`CrossInteraction` / :class:`CrossNet`: DCN v1 (Wang et al., ADKDD 2017), a rank-1
  cross ``x_{l+1} = x_0 * (x_l . w) + b + x_l``.
* :class:`CrossNetV2`: DCN-V2 (Wang et al., WWW 2021), a full-matrix cross
  ``x_{l+1} = x_0 * (W x_l + b) + x_l``, optionally as a gated mixture of low-rank experts.
* :class:`LinearCrossNetwork` / :class:`ExponentialCrossNetwork`: DCNv3's LCN and ECN
  (Li et al., 2024), with the Self-Mask that keeps a ReLU(LayerNorm)-gated half of each
  layer's interaction.

Shapes: (B, d) -> (B, d) with d the flattened input width (usually F * D), except the
DCNv3 networks, which take (B, H, d) per-head inputs and return per-head logits (B, H).
"""

from __future__ import annotations

import torch
from torch import nn

from adrank.nn.dropout import Dropout


class CrossInteraction(nn.Module):
    """One DCN v1 cross term without the residual: ``x_0 * (x_l . w) + b``.

    Shapes: x_0, x_l (B, d) -> (B, d).
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.weight = nn.Linear(input_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * self.weight(xl) + self.bias  # (B, d) * (B, 1) + (d,)


class CrossNet(nn.Module):
    """DCN v1 cross network: ``num_layers`` residual :class:`CrossInteraction` layers.

    Shapes: (B, d) -> (B, d).
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossInteraction(input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x + layer(x0, x)
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 cross network.

    With ``low_rank=None`` each layer is ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` with a full
    d x d matrix. With ``low_rank=r`` each layer is a softmax-gated mixture of
    ``num_experts`` low-rank experts ``x_0 * (U tanh(C tanh(V^T x_l)) + b)`` (the paper's
    "DCN-Mix"; U, V: d x r, C: r x r), plus the residual ``x_l``.

    Shapes: (B, d) -> (B, d).
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int,
        low_rank: int | None = None,
        num_experts: int = 1,
    ) -> None:
        super().__init__()
        if low_rank is not None and (low_rank < 1 or num_experts < 1):
            raise ValueError(
                f"low_rank and num_experts must be >= 1, got {low_rank} and {num_experts}"
            )
        self.num_layers = num_layers
        self.low_rank = low_rank
        if low_rank is None:
            self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))
            return
        shape_uv = (num_layers, num_experts, input_dim, low_rank)
        self.u = nn.Parameter(torch.empty(shape_uv))
        self.v = nn.Parameter(torch.empty(shape_uv))
        self.c = nn.Parameter(torch.empty(num_layers, num_experts, low_rank, low_rank))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        self.gates = nn.ModuleList(
            nn.Linear(input_dim, num_experts, bias=False) for _ in range(num_layers)
        )
        for p in (self.u, self.v, self.c):
            for layer in range(num_layers):
                for expert in range(num_experts):
                    nn.init.xavier_normal_(p.data[layer, expert])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for i in range(self.num_layers):
            if self.low_rank is None:
                x = x + x0 * self.layers[i](x)
                continue
            h = torch.tanh(torch.einsum("bd,edr->ber", x, self.v[i]))  # (B, E, r)
            h = torch.tanh(torch.einsum("ers,bes->ber", self.c[i], h))  # (B, E, r)
            experts = x0.unsqueeze(1) * (torch.einsum("edr,ber->bed", self.u[i], h) + self.bias[i])
            gate = self.gates[i](x).softmax(dim=-1)  # (B, E)
            x = x + (gate.unsqueeze(-1) * experts).sum(dim=1)  # (B, d)
        return x


class _CrossNetworkV3(nn.Module):
    """Shared body of DCNv3's LCN and ECN.

    Each layer computes ``h = W x_l`` (d -> d/2, optional BatchNorm over heads), the Self-Mask
    ``c = [h, h * ReLU(LayerNorm(h))]`` (d), then
    ``x_{l+1} = base * (c + b) + x_l`` where ``base`` is ``x_0`` (LCN: the interaction
    order grows linearly) or ``x_l`` (ECN: it doubles each layer), then dropout.
    A final linear layer maps each head's ``x_L`` to a logit.

    Shapes: (B, H, d) -> (B, H) per-head logits. ``d`` must be even.
    """

    exponential: bool = False

    def __init__(
        self,
        input_dim: int,
        num_layers: int,
        dropout: float = 0.0,
        layer_norm: bool = True,
        batch_norm: bool = False,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        if input_dim % 2:
            raise ValueError(
                f"DCNv3 cross networks need an even input width (F * D), got {input_dim}"
            )
        half = input_dim // 2
        self.weights = nn.ModuleList(
            nn.Linear(input_dim, half, bias=False) for _ in range(num_layers)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.rand(input_dim))
            for _ in range(num_layers)  # uniform(0, 1) init
        )
        self.layer_norms = nn.ModuleList(
            nn.LayerNorm(half) if layer_norm else nn.Identity() for _ in range(num_layers)
        )
        # BatchNorm1d over (B, H, d/2) normalizes each head channel over batch and width.
        self.batch_norms = nn.ModuleList(
            nn.BatchNorm1d(num_heads) if batch_norm else nn.Identity() for _ in range(num_layers)
        )
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output = nn.Linear(input_dim, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b, ln, bn in zip(
            self.weights, self.biases, self.layer_norms, self.batch_norms, strict=True
        ):
            h = bn(w(x))  # (B, H, d/2)
            mask = torch.relu(ln(h))  # Self-Mask: keep the ReLU(LayerNorm)-gated part
            c = torch.cat([h, h * mask], dim=-1)  # (B, H, d)
            base = x if self.exponential else x0
            x = self.dropout(base * (c + b) + x)
        return self.output(x).squeeze(-1)  # (B, H)


class LinearCrossNetwork(_CrossNetworkV3):
    """DCNv3 LCN: ``x_{l+1} = x_0 * Mask(W x_l + b) + x_l`` (order grows linearly).

    Shapes: (B, H, d) -> (B, H) per-head logits.
    """

    exponential = False


class ExponentialCrossNetwork(_CrossNetworkV3):
    """DCNv3 ECN: ``x_{2^l} = x_{2^{l-1}} * Mask(W x_{2^{l-1}} + b) + x_{2^{l-1}}`` (order
    doubles each layer).

    Shapes: (B, H, d) -> (B, H) per-head logits.
    """

    exponential = True
