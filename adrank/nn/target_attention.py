"""Target attention over a behaviour history: the target item (or K candidate items) is the
query, the user's history the keys and values.

* :class:`Dice` and :class:`DINAttention`: the local activation unit of DIN (Zhou et al.,
  "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).
* :class:`MultiHeadTargetAttention`: scaled dot-product attention with the target as the
  query (the target attention of BST/ETA/TWIN-style models; FuxiCTR's
  ``MultiHeadTargetAttention``).

Notation: B batch, L history length, K candidates per row, D widths, H heads. Every layer
takes a target (B, D) -> output (B, ·), or candidates (B, K, D) -> (B, K, ·) that share their
row's history (the history-side work is done once for all K). ``mask`` is (B, L) bool,
``True`` = a real behaviour. Padded positions are zeroed on entry and never attended; a
row without any real behaviour attends to nothing and its pooled history is zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.nn.dropout import dropout
from adrank.nn.mlp import activation as make_activation
from adrank.nn.mlp import check_widths
from adrank.nn.pooling import as_candidates, check_history, mask_padding, masked_softmax


class Dice(nn.Module):
    """Data-adaptive activation of DIN: ``p(x) * x + (1 - p(x)) * alpha * x`` with
    ``p(x) = sigmoid((x - E[x]) / sqrt(Var[x] + eps))`` (paper eq. 9).

    ``E[x]`` and ``Var[x]`` are the batch statistics in training and running averages
    (``momentum``) in evaluation, per feature. Unlike a plain ``BatchNorm``, the statistics
    are taken over the real positions of ``mask`` only, so padding cannot shift them; a
    batch without any real position uses (and keeps) the running statistics.

    Shapes: (..., C) with an optional bool mask (...) -> (..., C).
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.01) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            flat = x.reshape(-1, x.shape[-1])  # (N, C)
            if mask is None:
                weight = flat.new_ones(flat.shape[0], 1)
            else:
                weight = mask.reshape(-1, 1).to(x.dtype)
            count = weight.sum()
            mean = (flat * weight).sum(0) / count.clamp_min(1.0)
            var = ((flat - mean).pow(2) * weight).sum(0) / count.clamp_min(1.0)
            seen = count > 0
            mean = torch.where(seen, mean, self.running_mean)
            var = torch.where(seen, var, self.running_var)
            with torch.no_grad():
                m = self.momentum
                self.running_mean.copy_((1 - m) * self.running_mean + m * mean.detach())
                self.running_var.copy_((1 - m) * self.running_var + m * var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1 - p) * self.alpha * x


class DINAttention(nn.Module):
    """DIN's local activation unit: ``w_l = MLP([h_l, t, h_l - t, h_l * t])`` and
    ``out = sum_l w_l h_l`` over real behaviours.

    As in the paper the weights are not normalised (``softmax=False``: "the normalization
    with softmax is abandoned to reserve the intensity of user interests"); ``softmax=True``
    normalises them over the real behaviours. An empty history gives zeros.

    Args:
        dim: D, the width of target and history vectors.
        hidden_units: widths of the MLP's hidden layers (paper: 36).
        activation: ``"dice"`` (the paper's) or any :func:`adrank.nn.mlp.activation` name.
        softmax: normalise the weights over the history.

    Shapes: target (B, D) or (B, K, D), history (B, L, D), mask (B, L) -> (B, D) or (B, K, D).
    A target (B, K, L, D) (one vector per candidate and behaviour) gives (B, K, D).
    """

    def __init__(
        self,
        dim: int,
        hidden_units: Sequence[int] = (36,),
        activation: str = "dice",
        softmax: bool = False,
    ) -> None:
        super().__init__()
        check_widths(hidden_units, "attention_hidden_units")
        self.softmax = softmax
        self.linears = nn.ModuleList()
        self.activations = nn.ModuleList()
        width = 4 * dim
        for units in hidden_units:
            self.linears.append(nn.Linear(width, units))
            self.activations.append(
                Dice(units) if activation == "dice" else make_activation(activation)
            )
            width = units
        self.score = nn.Linear(width, 1)

    def scores(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Raw activation-unit scores (B, K, L) for candidates (B, K, D), or for targets
        that differ along the history (B, K, L, D) (DMIN's position-aware target); 0 at
        padding."""
        hist = mask_padding(history, mask).unsqueeze(1)  # (B, 1, L, D)
        if target.dim() == 3:
            target = target.unsqueeze(2).expand(-1, -1, hist.shape[2], -1)
        t = target  # (B, K, L, D)
        hist = hist.expand_as(t)
        x = torch.cat([hist, t, hist - t, hist * t], dim=-1)  # (B, K, L, 4D)
        row_mask = mask.unsqueeze(1).expand(t.shape[:3])  # (B, K, L)
        for linear, act in zip(self.linears, self.activations, strict=True):
            x = act(linear(x), row_mask) if isinstance(act, Dice) else act(linear(x))
        score = self.score(x).squeeze(-1)  # (B, K, L)
        return score.masked_fill(~row_mask, 0.0)

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        check_history(history, mask)
        if target.dim() == 4:
            b, length, d = history.shape
            if target.shape[0] != b or target.shape[2:] != (length, d):
                raise ValueError(
                    f"target must be (B, D), (B, K, D) or (B, K, L, D) = ({b}, K, {length}, "
                    f"{d}) for history {tuple(history.shape)}, got {tuple(target.shape)}"
                )
            t, single = target, False
        else:
            t, single = as_candidates(target)
        score = self.scores(t, history, mask)  # (B, K, L)
        weights = masked_softmax(score, mask.unsqueeze(1)) if self.softmax else score
        out = weights @ mask_padding(history, mask)  # (B, K, L) @ (B, L, D) -> (B, K, D)
        return out.squeeze(1) if single else out


def head_width(attention_dim: int, num_heads: int) -> int:
    """Width of one head, ``attention_dim / num_heads``; an error unless it divides."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    if attention_dim % num_heads != 0:
        raise ValueError(f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}")
    return attention_dim // num_heads


def attend(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    attn_dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Masked scaled dot-product attention per head.

    Shapes: query (..., H, Q, Dh), keys/values (..., H, L, Dh), mask broadcastable to
    (..., H, Q, L) -> (..., H, Q, Dh); a query with no unmasked key gets zeros.
    """
    scores = (query @ keys.transpose(-1, -2)) * scale  # (..., H, Q, L)
    weights = dropout(masked_softmax(scores, mask), attn_dropout, training)
    return weights @ values


class MultiHeadTargetAttention(nn.Module):
    """Multi-head target attention: ``W_o concat_h softmax(q_h K_h^T / sqrt(Dh)) V_h`` with
    ``q = W_q t``, ``K = W_k h``, ``V = W_v h``; padding masked out of the softmax.

    Args:
        query_dim: width of the target vectors.
        key_dim: width of the history vectors (default ``query_dim``).
        attention_dim: total width of the heads (default ``key_dim``); divisible by
            ``num_heads``.
        num_heads: H.
        use_scale: divide scores by ``sqrt(Dh)``.
        attn_dropout: dropout on the attention weights (training only).
        output_dim: width of the output projection (default ``attention_dim``).
        output_bias: a bias on the output projection.

    Subclasses change how scores become weights by overriding :meth:`attention_weights`.

    Shapes: target (B, D) or (B, K, D); history (B, L, Dk) shared by the K candidates, or
    (B, K, L, Dk) per candidate (retrieved items) with mask (B, K, L) -> (B, O) or (B, K, O).
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int | None = None,
        attention_dim: int | None = None,
        num_heads: int = 1,
        use_scale: bool = True,
        attn_dropout: float = 0.0,
        output_dim: int | None = None,
        output_bias: bool = False,
    ) -> None:
        super().__init__()
        key_dim = key_dim or query_dim
        attention_dim = attention_dim or key_dim
        self.num_heads = num_heads
        self.head_dim = head_width(attention_dim, num_heads)
        self.scale = self.head_dim**-0.5 if use_scale else 1.0
        self.attn_dropout = attn_dropout
        self.query = nn.Linear(query_dim, attention_dim, bias=False)
        self.key = nn.Linear(key_dim, attention_dim, bias=False)
        self.value = nn.Linear(key_dim, attention_dim, bias=False)
        self.output = nn.Linear(attention_dim, output_dim or attention_dim, bias=output_bias)
        self.output_dim = output_dim or attention_dim

    def attention_weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Weights from scaled scores (..., L) and a broadcastable key mask: a softmax over
        the real behaviours (all zeros for an empty history)."""
        return masked_softmax(scores, mask)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-2, -3)  # (.., H, n, Dh)

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        t, single = as_candidates(target)  # (B, K, D)
        if history.dim() == 3:
            check_history(history, mask)
            history, mask = history.unsqueeze(1), mask.unsqueeze(1)  # (B, 1, L, Dk), (B, 1, L)
        hist = history.masked_fill(~mask.unsqueeze(-1), 0.0)
        q = self._heads(self.query(t).unsqueeze(2))  # (B, K, H, 1, Dh)
        k, v = self._heads(self.key(hist)), self._heads(self.value(hist))  # (B, K|1, H, L, Dh)
        key_mask = mask.unsqueeze(-2).unsqueeze(-2)  # (B, K|1, 1, 1, L)
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, K, H, 1, L)
        weights = self.attention_weights(scores, key_mask)
        out = dropout(weights, self.attn_dropout, self.training) @ v  # (B, K, H, 1, Dh)
        out = self.output(out.squeeze(-2).flatten(-2))  # (B, K, H*Dh) -> (B, K, O)
        return out.squeeze(1) if single else out
