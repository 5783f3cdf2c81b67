"""The transformer over behaviours and target of BST (Chen et al., "Behavior Sequence
Transformer for E-commerce Recommendation in Alibaba", DLP-KDD 2019).

The target item is appended to the history and the L + 1 items go through post-norm
transformer layers (paper section 2.2): ``S' = LayerNorm(S + Dropout(MH(S)))`` and
``F = LayerNorm(S' + Dropout(LeakyReLU(S' W1 + b1) W2 + b2))``.

Positions: the paper embeds the time gap ``t(target) - t(item)``. Without timestamps in the
history we embed the recency rank instead: the target is position 0, the most recent real
behaviour 1, the one before it 2, and so on (capped at ``max_len``). Ranks are counted over
real items only, so left and right padding give the same positions.

Notation: B batch, L history length, K candidates, D width. ``mask`` (B, L) bool, ``True`` =
real behaviour. Padded positions are masked as keys and their output rows are zeros; the
target is always a valid key, so no softmax row is empty and an empty history gives the
target's own transformed vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adrank.nn.dropout import dropout
from adrank.nn.pooling import as_candidates, check_history, mask_padding, recency_positions
from adrank.nn.target_attention import attend, head_width


class TransformerLayer(nn.Module):
    """One post-norm transformer layer with key-padding mask; rows of padded queries are
    zeroed. Shapes: x (N, S, D), mask (N, S) -> (N, S, D)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout_rate: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_width(dim, num_heads)
        self.dropout_rate = dropout_rate
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn1 = nn.Linear(dim, ffn_dim)
        self.ffn2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        q, k, v = self.qkv(x).view(n, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = attend(q, k, v, mask.view(n, 1, 1, s), self.head_dim**-0.5)  # (N, H, S, Dh)
        att = self.out(att.transpose(1, 2).reshape(n, s, d))
        x = self.norm1(x + dropout(att, self.dropout_rate, self.training))
        ffn = self.ffn2(F.leaky_relu(self.ffn1(x)))
        x = self.norm2(x + dropout(ffn, self.dropout_rate, self.training))
        return mask_padding(x, mask)


class BehaviorTransformer(nn.Module):
    """BST's transformer over [history, target] with recency position embeddings.

    Args:
        dim: D, the width of behaviour and target vectors.
        num_heads: attention heads (paper: 8).
        num_layers: transformer layers (paper: 1).
        ffn_dim: hidden width of the feed-forward net (default 4 D).
        dropout: dropout after attention and feed-forward (training only).
        max_len: the largest recency rank with its own embedding (larger ranks share it).

    Shapes: target (B, D) or (B, K, D), history (B, L, D), mask (B, L) -> ``(outputs, mask)``:
    outputs (B, L + 1, D) or (B, K, L + 1, D), the last row being the target's; mask
    (B, L + 1) (or (B, K, L + 1)), ``True`` for the real behaviours and the target.
    Candidates each get their own sequence: the cost is O(K L^2).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        num_layers: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        max_len: int = 50,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.positions = nn.Embedding(max_len + 1, dim)
        self.layers = nn.ModuleList(
            TransformerLayer(dim, num_heads, ffn_dim or 4 * dim, dropout) for _ in range(num_layers)
        )

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_history(history, mask)
        t, single = as_candidates(target)  # (B, K, D)
        b, k, d = t.shape
        length = history.shape[1]
        rank = recency_positions(mask).clamp_max(self.max_len)  # (B, L); target rank 0
        hist = mask_padding(history + self.positions(rank), mask)  # (B, L, D)
        target_row = (t + self.positions.weight[0]).unsqueeze(2)  # (B, K, 1, D)
        seq = torch.cat([hist.unsqueeze(1).expand(b, k, length, d), target_row], dim=2)
        seq_mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)  # (B, L + 1)
        x = seq.reshape(b * k, length + 1, d)
        flat_mask = seq_mask.unsqueeze(1).expand(b, k, length + 1).reshape(b * k, length + 1)
        for layer in self.layers:
            x = layer(x, flat_mask)
        x = x.view(b, k, length + 1, d)
        if single:
            return x.squeeze(1), seq_mask
        return x, seq_mask.unsqueeze(1).expand(b, k, length + 1)
