"""Attention layers over field embeddings.

``MultiHeadSelfAttention`` is the interacting layer of AutoInt (Song et al., "AutoInt:
Automatic Feature Interaction Learning via Self-Attentive Neural Networks", CIKM 2019):
every field attends to every other field, per head, and the result keeps one vector per
field so layers can be stacked.
"""

from __future__ import annotations

import torch
from torch import nn

from adrank.nn.dropout import dropout


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention across fields with optional residual, scaling and layer norm.

    ``out = ReLU(LayerNorm?(concat_h softmax(Q_h K_h^T / s) V_h + W_res x))`` where
    ``s = sqrt(head_dim)`` when ``use_scale`` else 1, and ``W_res`` is the identity when
    ``input_dim == attention_dim`` (a linear projection otherwise).

    Args:
        input_dim: width of each field vector of the input.
        attention_dim: total width of the output (split evenly over ``num_heads``).
        num_heads: number of heads; must divide ``attention_dim``.
        dropout: dropout on the attention weights (training only).
        use_residual: add the (projected) input to the attention output.
        use_scale: divide scores by ``sqrt(head_dim)``.
        layer_norm: LayerNorm over ``attention_dim`` before the final ReLU.

    Shapes: (B, F, input_dim) -> (B, F, attention_dim).
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int | None = None,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        attention_dim = attention_dim or input_dim
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
        if attention_dim % num_heads != 0:
            raise ValueError(
                f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.attention_dim = attention_dim
        self.dropout = dropout
        self.scale = self.head_dim**-0.5 if use_scale else 1.0
        self.use_residual = use_residual
        self.query = nn.Linear(input_dim, attention_dim, bias=False)
        self.key = nn.Linear(input_dim, attention_dim, bias=False)
        self.value = nn.Linear(input_dim, attention_dim, bias=False)
        self.residual = (
            nn.Linear(input_dim, attention_dim, bias=False)
            if use_residual and input_dim != attention_dim
            else None
        )
        self.norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        return x.view(b, f, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, F, Dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        # Explicit softmax(Q K^T) V. With a handful of fields per sample this is ~1.9x faster
        # on CPU than F.scaled_dot_product_attention, whose fused kernel is built for long
        # sequences (forward + backward with the head split/merge, B=4096, 10 fields, 4 heads
        # of 32: 92 vs 172 ms on 2 threads; `python -m benchmarks kernels`).
        if self.scale != 1.0:
            q = q * self.scale
        weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, H, F, F)
        weights = dropout(weights, self.dropout, self.training)
        out = weights @ v  # (B, H, F, Dh)
        out = out.transpose(1, 2).reshape(b, f, self.attention_dim)  # (B, F, H * Dh)
        if self.use_residual:
            out = out + (self.residual(x) if self.residual is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)
