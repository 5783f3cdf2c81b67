"""TWIN's consistency-preserved two-stage attention (Chang et al., "TWIN: TWo-stage Interest
Network for Lifelong User Behavior Modeling in CTR Prediction at Kuaishou", KDD 2023).

The general search unit (GSU) and the exact search unit (ESU) use one relevance metric, so
the behaviours the GSU keeps are the ones the ESU would weigh most:

* behaviour features split into **inherent** ones ``K_h`` (the item's own embeddings: id,
  category, ...; their projection ``K_h W_h`` depends only on the item, which is what lets
  TWIN cache it) and **cross** ones ``K_c`` (user-item features of the behaviour, e.g. how
  long the user watched it or how long ago; J of them, each of width Dc);
* per head ``i``: ``alpha_i = (K_h W_h_i)(q W_q_i)^T / sqrt(Dk) + (K_c W_c) beta_i``, where
  ``W_c`` compresses each cross feature to one number (the paper's simplification) and
  ``beta_i`` weighs them;
* GSU: the ``top_k`` behaviours by the head-mean of ``alpha`` (the paper ranks with the
  same ``alpha``; using the mean over heads is our reading for H > 1);
* ESU: per head ``softmax(alpha_i)`` over the retrieved behaviours, reusing the GSU's
  ``alpha`` values (gathered, not recomputed), times ``V_i = [K_h, K_c] W_v_i``; heads are
  concatenated and projected by ``W_o``.

Notation: B batch, L history length, K candidates, D widths, H heads, k = ``top_k``.
``mask`` is (B, L) bool. Padding is never retrieved as a real behaviour nor attended; an
empty history gives zeros.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from adrank.nn.pooling import (
    as_candidates,
    check_history,
    gather_positions,
    mask_padding,
    masked_softmax,
    select_top_k,
)
from adrank.nn.target_attention import head_width


class TWINState(NamedTuple):
    """User side of TWIN, computed once per request: ``keys`` (B, H, L, Dh) = K_h W_h,
    ``cross_bias`` (B, H, L) = (K_c W_c) beta, ``values`` (B, L, H·Dh) and ``mask`` (B, L)."""

    keys: torch.Tensor
    cross_bias: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor


class TWINAttention(nn.Module):
    """TWIN's GSU + ESU with one relevance metric.

    Args:
        dim: width of the inherent behaviour features and of the target (the target is an
            item, described by the same inherent features).
        top_k: behaviours the GSU keeps per candidate (paper: 100).
        num_heads: H (paper: 4).
        attention_dim: total width of the heads (default ``dim``).
        num_cross: J, cross features per behaviour (0 for none).
        cross_dim: Dc, width of each cross feature.

    Shapes: ``encode_history(history (B, L, D), mask (B, L), cross (B, L, J, Dc) or None)``
    -> :class:`TWINState`; ``attend(state, target (B, D) or (B, K, D))`` -> (B, A) or
    (B, K, A) with A = ``attention_dim``.
    """

    def __init__(
        self,
        dim: int,
        top_k: int = 100,
        num_heads: int = 4,
        attention_dim: int | None = None,
        num_cross: int = 0,
        cross_dim: int = 1,
    ) -> None:
        super().__init__()
        attention_dim = attention_dim or dim
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.num_heads = num_heads
        self.head_dim = head_width(attention_dim, num_heads)
        self.num_cross = num_cross
        self.query = nn.Linear(dim, attention_dim, bias=False)
        self.key = nn.Linear(dim, attention_dim, bias=False)
        self.value = nn.Linear(dim + num_cross * cross_dim, attention_dim, bias=False)
        self.output = nn.Linear(attention_dim, attention_dim, bias=False)
        if num_cross:
            self.cross_compress = nn.Parameter(torch.randn(num_cross, cross_dim) * cross_dim**-0.5)
            self.cross_beta = nn.Parameter(torch.zeros(num_cross, num_heads))

    def encode_history(
        self, history: torch.Tensor, mask: torch.Tensor, cross: torch.Tensor | None = None
    ) -> TWINState:
        """Project the behaviours once per user. O(B L D A)."""
        check_history(history, mask)
        b, length, _ = history.shape
        hist = mask_padding(history, mask)
        keys = self.key(hist).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        if self.num_cross:
            if cross is None or tuple(cross.shape[:3]) != (b, length, self.num_cross):
                shape = None if cross is None else tuple(cross.shape)
                raise ValueError(
                    f"cross features must be (B, L, {self.num_cross}, Dc), got {shape}"
                )
            cross = cross.masked_fill(~mask.view(b, length, 1, 1), 0.0)
            compressed = (cross * self.cross_compress).sum(-1)  # (B, L, J): K_c W_c
            bias = (compressed @ self.cross_beta).transpose(1, 2)  # (B, H, L)
            values = self.value(torch.cat([hist, cross.flatten(2)], dim=-1))
        else:
            if cross is not None:
                raise ValueError("cross features given, but the layer was built with num_cross=0")
            bias = hist.new_zeros(b, self.num_heads, length)
            values = self.value(hist)
        return TWINState(keys, bias, values, mask)

    def relevance(self, state: TWINState, target: torch.Tensor) -> torch.Tensor:
        """alpha (B, K, H, L) of candidates (B, K, D): the one metric of GSU and ESU."""
        b, k, _ = target.shape
        q = self.query(target).view(b, k, self.num_heads, 1, self.head_dim)
        scores = (q @ state.keys.unsqueeze(1).transpose(-1, -2)).squeeze(-2)  # (B, K, H, L)
        return scores * self.head_dim**-0.5 + state.cross_bias.unsqueeze(1)

    def attend(self, state: TWINState, target: torch.Tensor) -> torch.Tensor:
        t, single = as_candidates(target)
        b, k, _ = t.shape
        alpha = self.relevance(state, t)  # (B, K, H, L)
        index, found = select_top_k(alpha.mean(2), state.mask.unsqueeze(1), self.top_k)  # GSU
        n = index.shape[-1]
        kept = alpha.gather(-1, index.unsqueeze(2).expand(b, k, self.num_heads, n))  # (B,K,H,k)
        weights = masked_softmax(kept, found.unsqueeze(2))  # ESU, same alpha
        values = gather_positions(state.values, index)  # (B, K, k, A)
        values = values.view(b, k, n, self.num_heads, self.head_dim).transpose(2, 3)
        out = (weights.unsqueeze(-2) @ values).squeeze(-2)  # (B, K, H, Dh)
        out = self.output(out.flatten(-2))
        return out.squeeze(1) if single else out

    def forward(
        self,
        target: torch.Tensor,
        history: torch.Tensor,
        mask: torch.Tensor,
        cross: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.attend(self.encode_history(history, mask, cross), target)
