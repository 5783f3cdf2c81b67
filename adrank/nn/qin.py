"""Layers of QIN, the Quadratic Interest Network (Li et al., "Quadratic Interest Network
for Multimodal Click-Through Rate Prediction", 2nd place of the WWW 2025 EReL@MIR
multimodal CTR prediction challenge; reference code: github.com/salmon1802/QIN).

* :class:`AdaptiveSparseTargetAttention`: target attention whose weights are
  ``ReLU(q k^T / sqrt(A))`` instead of a softmax. Behaviours scoring below zero get exactly
  zero weight, so the attention is sparse and the number of behaviours it keeps adapts to
  the target; the weights are not normalised. The output is ``W_o(attended) + target``.
* :class:`QuadraticLayer` and :class:`QuadraticNetwork`: the quadratic neural network
  (QNN) of QIN: each layer multiplies its input element-wise with R linear maps of it and
  sums them, ``x * sum_r (W_r x + b_r)`` (a Khatri-Rao product), followed by PReLU,
  optional dropout and a residual connection, so L layers reach degree 2^L.

Notation: B batch, L history length, K candidates, D width. ``mask`` (B, L) bool, ``True`` =
real behaviour. Padded positions are zeroed on entry and get weight 0; with an empty
history the attended vector is 0 and the output is ``W_o(0) + target``.
"""

from __future__ import annotations

import torch
from torch import nn

from adrank.nn.dropout import Dropout
from adrank.nn.target_attention import MultiHeadTargetAttention


class AdaptiveSparseTargetAttention(MultiHeadTargetAttention):
    """QIN's target attention with ReLU weights: ``W_o concat_h ReLU(q_h K_h^T / s) V_h +
    b_o + target``.

    Args:
        dim: D, width of target and history vectors (and of the output).
        attention_dim: width of the query/key/value projections (reference: 2 D).
        num_heads: heads (reference: 1); ``attention_dim`` must be divisible by it.
        use_scale: divide scores by ``s = sqrt(attention_dim / num_heads)``.

    Shapes: target (B, D) or (B, K, D), history (B, L, D), mask (B, L) -> (B, D) or
    (B, K, D).
    """

    def __init__(
        self,
        dim: int,
        attention_dim: int | None = None,
        num_heads: int = 1,
        use_scale: bool = True,
    ) -> None:
        super().__init__(
            dim,
            dim,
            attention_dim or 2 * dim,
            num_heads=num_heads,
            use_scale=use_scale,
            output_dim=dim,
            output_bias=True,
        )

    def attention_weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ReLU(scores)`` at real behaviours, exactly 0 at padding; not normalised."""
        return torch.relu(scores.masked_fill(~mask, 0.0))

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(target, history, mask) + target


class QuadraticLayer(nn.Module):
    """``x * sum_r (W_r x + b_r)`` for R = ``num_row`` maps. Shapes: (B, D) -> (B, D)."""

    def __init__(self, dim: int, num_row: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_row = num_row
        self.linear = nn.Linear(dim, dim * num_row)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.linear(x)).unflatten(-1, (self.num_row, x.shape[-1]))  # (B, R, D)
        return x * h.sum(-2)


class QuadraticNetwork(nn.Module):
    """QIN's QNN: ``x <- x + Dropout(PReLU(Norm?(QuadraticLayer(x))))`` repeated, then an
    optional linear output.

    Args:
        dim: D, input width (kept through the layers).
        num_layers: quadratic layers (reference: 3).
        num_row: R maps per layer (reference: 2 to 4).
        dropout: dropout inside and after each layer.
        batch_norm: BatchNorm after each quadratic layer.
        output_dim: width of a final linear layer (1 for a logit), or None for (B, D).

    Shapes: (B, D) -> (B, output_dim) or (B, D).
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 3,
        num_row: int = 2,
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = 1,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            QuadraticLayer(dim, num_row, dropout) for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(dim) if batch_norm else nn.Identity() for _ in range(num_layers)
        )
        self.activations = nn.ModuleList(nn.PReLU() for _ in range(num_layers))
        self.dropouts = nn.ModuleList(
            Dropout(dropout) if dropout > 0 else nn.Identity() for _ in range(num_layers)
        )
        self.output = nn.Linear(dim, output_dim) if output_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, norm, act, drop in zip(
            self.layers, self.norms, self.activations, self.dropouts, strict=True
        ):
            x = x + drop(act(norm(layer(x))))
        return self.output(x) if self.output is not None else x
