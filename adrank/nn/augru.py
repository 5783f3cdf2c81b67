"""DIEN's interest extractor and interest evolving layers (Zhou et al., "Deep Interest
Evolution Network for Click-Through Rate Prediction", AAAI 2019).

* :class:`InterestExtractor`: a GRU over the behaviours; its states ``h_t`` are the
  interests, trained with :func:`interest_auxiliary_loss` (paper eq. 2).
* :class:`AUGRU`: the interest evolving GRU whose update gate is scaled by the attention of
  the target on each interest state (paper eqs. 4 and 7 to 9).
* :func:`sample_negative_positions`: the auxiliary loss's negative behaviours.

Notation: B batch, L history length, K candidates, D behaviour width, H hidden width.
``mask`` is (B, L) bool (``True`` = real behaviour). Both GRUs step over all L positions
and keep their state unchanged at padded ones, so left and right padding give the same
result and padded values never reach a state. An empty history leaves the state at its
initial zeros: interests are all zeros and the evolved interest is the zero vector.
The loops step in Python over L; DIEN is O(L) per candidate and sequential by design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adrank.nn.pooling import as_candidates, check_history, mask_padding, masked_softmax


class InterestExtractor(nn.Module):
    """GRU over the behaviours with padding skipped.

    Shapes: history (B, L, D), mask (B, L) -> interests (B, L, H), zeros at padding.
    """

    def __init__(self, input_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim or input_dim
        self.cell = nn.GRUCell(input_dim, self.hidden_dim)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_history(history, mask)
        x = mask_padding(history, mask)
        h = x.new_zeros(x.shape[0], self.hidden_dim)
        states = []
        for step in range(x.shape[1]):
            real = mask[:, step].unsqueeze(-1)  # (B, 1)
            h = torch.where(real, self.cell(x[:, step], h), h)
            states.append(h.masked_fill(~real, 0.0))
        return torch.stack(states, dim=1)  # (B, L, H)


class AUGRU(nn.Module):
    """GRU with attentional update gate: ``u'_t = a_t * u_t``,
    ``h_t = (1 - u'_t) * h_{t-1} + u'_t * tanh(W_h i_t + r_t * (U_h h_{t-1}) + b_h)``,
    with the attention ``a_t = softmax_t(i_t W e_target)`` over the real positions.

    Args:
        input_dim: width of the interest states ``i_t`` (the extractor's H).
        target_dim: width of the target vector ``e_target``.
        hidden_dim: width of the evolved interest (default ``input_dim``).

    Shapes: target (B, T) or (B, K, T), interests (B, L, I), mask (B, L) -> final evolved
    interest (B, H) or (B, K, H) (the state after the last real behaviour; zeros when the
    history is empty).
    """

    def __init__(self, input_dim: int, target_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim or input_dim
        self.attention = nn.Linear(target_dim, input_dim, bias=False)  # W in i_t W e_target
        self.input_gates = nn.Linear(input_dim, 3 * self.hidden_dim)  # r, u, candidate
        self.hidden_gates = nn.Linear(self.hidden_dim, 3 * self.hidden_dim, bias=False)

    def attention_scores(
        self, target: torch.Tensor, interests: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention ``a_t`` (B, K, L) of candidates (B, K, T) on the interests (0 at padding)."""
        scores = self.attention(target) @ interests.transpose(1, 2)  # (B, K, I) @ (B, I, L)
        return masked_softmax(scores, mask.unsqueeze(1))

    def forward(
        self, target: torch.Tensor, interests: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        check_history(interests, mask)
        t, single = as_candidates(target)
        b, k = t.shape[:2]
        x = mask_padding(interests, mask)
        att = self.attention_scores(t, x, mask)  # (B, K, L)
        gates_x = self.input_gates(x)  # (B, L, 3H), once for all K candidates
        h = x.new_zeros(b, k, self.hidden_dim)
        for step in range(x.shape[1]):
            gx = gates_x[:, step].unsqueeze(1)  # (B, 1, 3H)
            gh = self.hidden_gates(h)  # (B, K, 3H)
            r_x, u_x, c_x = gx.chunk(3, dim=-1)
            r_h, u_h, c_h = gh.chunk(3, dim=-1)
            reset = torch.sigmoid(r_x + r_h)
            update = torch.sigmoid(u_x + u_h) * att[:, :, step].unsqueeze(-1)  # u'_t = a_t u_t
            candidate = torch.tanh(c_x + reset * c_h)
            new_h = (1 - update) * h + update * candidate
            h = torch.where(mask[:, step].view(b, 1, 1), new_h, h)
        return h.squeeze(1) if single else h


def sample_negative_positions(
    ids: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
    max_tries: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative behaviours for DIEN's auxiliary loss, sampled in-batch.

    For every position of every history a negative item is drawn **uniformly from the
    distinct item ids in this batch's histories** (the in-batch item vocabulary; each
    distinct id equally likely, whatever its count), **excluding every item of that user's
    own history** (stricter than the paper's "not clicked at that step"). A draw that hits
    the user's history is redrawn up to ``max_tries`` times; positions still colliding (or
    padded, or in a batch with no other item) are marked invalid and left out of the loss.

    Returns ``(index, valid)``, both (B, L): ``index`` is a flat index into the B·L positions
    where the negative item occurs, so ``history.flatten(0, 1)[index]`` gives the negative's
    full vector with all its aligned attributes (e.g. item and genre).
    """
    b, length = ids.shape
    flat_ids = ids.reshape(-1)
    real = mask.reshape(-1).nonzero().squeeze(-1)  # flat positions of real items
    index = torch.zeros(b, length, dtype=torch.long, device=ids.device)
    valid = torch.zeros(b, length, dtype=torch.bool, device=ids.device)
    if real.numel() == 0:
        return index, valid
    unique, inverse = torch.unique(flat_ids[real], return_inverse=True)
    representative = torch.empty_like(unique).scatter_(0, inverse, real)  # a position per id
    for _ in range(max_tries):
        draw = torch.randint(unique.numel(), (b, length), generator=generator, device=ids.device)
        candidate = unique[draw]  # (B, L) ids
        own = ((candidate.unsqueeze(-1) == ids.unsqueeze(1)) & mask.unsqueeze(1)).any(-1)
        accept = ~valid & ~own & mask
        index = torch.where(accept, representative[draw], index)
        valid = valid | accept
    return index, valid


def interest_auxiliary_loss(
    interests: torch.Tensor,
    history: torch.Tensor,
    negatives: torch.Tensor,
    mask: torch.Tensor,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DIEN's auxiliary loss (eq. 2): the interest ``h_t`` should score the next clicked
    behaviour ``e_{t+1}`` above a non-clicked ``e^_{t+1}``:
    ``-mean[log sigmoid(<h_t, e_{t+1}>) + log(1 - sigmoid(<h_t, e^_{t+1}>))]`` over the steps
    where both t and t+1 are real behaviours (and the negative is valid).

    Shapes: interests (B, L, H), history and negatives (B, L, H), mask and negative_mask
    (B, L) -> scalar (0 when no step qualifies).
    """
    if interests.shape != history.shape or history.shape != negatives.shape:
        raise ValueError(
            "the auxiliary loss takes inner products: interests, history and negatives must "
            f"have one shape, got {tuple(interests.shape)}, {tuple(history.shape)}, "
            f"{tuple(negatives.shape)} (give the extractor hidden_dim = behaviour width)"
        )
    pairs = mask[:, :-1] & mask[:, 1:]  # (B, L-1)
    if negative_mask is not None:
        pairs = pairs & negative_mask[:, 1:]
    h = mask_padding(interests, mask)[:, :-1]
    pos = (h * mask_padding(history, mask)[:, 1:]).sum(-1)  # (B, L-1)
    neg = (h * negatives[:, 1:].masked_fill(~pairs.unsqueeze(-1), 0.0)).sum(-1)
    loss = -(F.logsigmoid(pos) + F.logsigmoid(-neg))
    loss = loss.masked_fill(~pairs, 0.0)
    return loss.sum() / pairs.sum().clamp_min(1)
