"""Hashing-based attention over long behaviour histories.

* :class:`SimHash`: random-projection (sign) signatures, Charikar's SimHash: two vectors
  agree on a bit with probability ``1 - angle / pi``.
* :class:`SDIM`: bucket sampling of SDIM (Cao et al., "Sampling Is All You Need on Modeling
  Long-Term User Behaviors for CTR Prediction", CIKM 2022). History and target are hashed
  into ``num_hashes`` signatures of ``hash_bits`` bits; for each hash, the behaviours whose
  signature equals the target's are summed; the result is averaged over the hashes. A
  behaviour's expected weight is its collision probability with the target, a
  locality-sensitive approximation of target attention.
* :class:`ETA`: ETA's retrieval (Chen et al., "End-to-End User Behavior Retrieval in
  Click-Through Rate Prediction Model", 2021): SimHash signatures, the ``top_k`` behaviours
  nearest to the target in Hamming distance (ties: the more recent first), then multi-head
  target attention over them.

Both split the work as serving wants it: :meth:`encode_history` does the user side once
per request (O(L)), :meth:`attend` scores any number of candidates against that state. For
SDIM ``attend`` costs O(num_hashes · D) per candidate, independent of L.

Notation: B batch, L history length, K candidates, D width, m hashes, tau bits per hash.
``mask`` is (B, L) bool (``True`` = real behaviour). Padded positions are zeroed first, so
they add nothing to any SDIM bucket (and get no gradient), and ETA never retrieves them as
real items; an empty history gives zeros (SDIM) or the attention's empty-history output
(ETA: zeros).

The projections are fixed random buffers drawn from ``seed`` (not trained, saved with the
model so serving hashes exactly like training); the hashed vectors are trained through
the aggregation, as in the paper.
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
    recency_positions,
    select_top_k,
)
from adrank.nn.target_attention import MultiHeadTargetAttention

#: SDIM sums a history into its buckets with a dense one-hot matmul up to this many buckets
#: per hash (hash_bits <= 4), and with ``scatter_add`` above (the one-hot would be too wide).
ONE_HOT_MAX_BUCKETS = 16


class SimHash(nn.Module):
    """Sign bits of a fixed Gaussian random projection. Shapes: (..., D) -> (..., num_bits)
    bool."""

    def __init__(self, dim: int, num_bits: int, seed: int = 0) -> None:
        super().__init__()
        if num_bits < 1:
            raise ValueError(f"num_bits must be >= 1, got {num_bits}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(dim, num_bits, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.projection) > 0


def _candidates_for(target: torch.Tensor, batch: int) -> tuple[torch.Tensor, str]:
    """(B, D) / (B, K, D) targets, or (N, D) candidates all for a single user's state (B=1)."""
    if target.dim() == 2 and batch == 1 and target.shape[0] != 1:
        return target.unsqueeze(0), "shared"  # (1, N, D): N candidates of one user
    t, single = as_candidates(target)
    return t, "single" if single else "multi"


def _restore(out: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "single":
        return out.squeeze(1)
    if kind == "shared":
        return out.squeeze(0)
    return out


class SDIMState(NamedTuple):
    """The user side of SDIM: ``buckets`` (B, m, 2^tau, D), the sum of the real behaviours
    in each bucket of each hash."""

    buckets: torch.Tensor


class SDIM(nn.Module):
    """SDIM's hash-bucket attention.

    Args:
        dim: D, width of history and target vectors (they are hashed with one projection).
        num_hashes: m, independent hash signatures.
        hash_bits: tau, bits per signature; each hash has 2^tau buckets.
        normalize: L2-normalise each hash's bucket sum before averaging over hashes
            (off: the plain mean of bucket sums, as in FuxiCTR's SDIM).
        seed: seed of the random projection.

    Shapes: ``encode_history(history (B, L, D), mask (B, L))`` -> :class:`SDIMState`;
    ``attend(state, target)`` with target (B, D) -> (B, D), (B, K, D) -> (B, K, D), or for a
    single user's state (B = 1) candidates (N, D) -> (N, D). ``forward(target, history,
    mask)`` is both in one call.
    """

    def __init__(
        self,
        dim: int,
        num_hashes: int = 16,
        hash_bits: int = 4,
        normalize: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_hashes < 1:
            raise ValueError(f"num_hashes must be >= 1, got {num_hashes}")
        if not 1 <= hash_bits <= 16:
            raise ValueError(
                f"hash_bits must be in 1..16 (2^tau buckets per hash), got {hash_bits}"
            )
        self.num_hashes = num_hashes
        self.hash_bits = hash_bits
        self.num_buckets = 1 << hash_bits
        self.normalize = normalize
        self.hash = SimHash(dim, num_hashes * hash_bits, seed)
        # First one-hot column / state row of each hash's buckets.
        offsets = torch.arange(num_hashes) * self.num_buckets
        self.register_buffer("offsets", offsets, persistent=False)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Bucket id of each hash: (..., D) -> (..., m) long in [0, 2^tau)."""
        bits = self.hash(x).unflatten(-1, (self.num_hashes, self.hash_bits))  # (..., m, tau)
        small = torch.uint8 if self.hash_bits <= 8 else torch.int32
        code = bits[..., 0].to(small)
        for j in range(1, self.hash_bits):  # bit j is worth 2^j (out of place: ONNX)
            code = code + bits[..., j].to(small) * (1 << j)
        return code.long()

    def encode_history(self, history: torch.Tensor, mask: torch.Tensor) -> SDIMState:
        """Sum the real behaviours into their buckets, once per user. O(B L m D)."""
        check_history(history, mask)
        b, length, d = history.shape
        hist = mask_padding(history, mask)
        codes = self.codes(hist)  # (B, L, m)
        m, c = self.num_hashes, self.num_buckets
        # Padded positions are exact zeros after mask_padding: whichever bucket they fall
        # into, they add nothing to it (and get no gradient).
        if c <= ONE_HOT_MAX_BUCKETS:
            # Dense: a (B, L, m·C) one-hot of the buckets, then one batched matmul; on CPU
            # about 3x faster than scatter_add, forward and backward.
            one_hot = hist.new_zeros(b, length, m, c).scatter_(3, codes.unsqueeze(-1), 1.0)
            buckets = one_hot.view(b, length, m * c).transpose(1, 2) @ hist  # (B, m·C, D)
            return SDIMState(buckets.view(b, m, c, d))
        # Sparse (many buckets per hash): scatter the behaviours into their buckets.
        index = codes.transpose(1, 2).unsqueeze(-1).expand(b, m, length, d)
        src = hist.unsqueeze(1).expand(b, m, length, d)
        return SDIMState(hist.new_zeros(b, m, c, d).scatter_add(2, index, src))

    def attend(self, state: SDIMState, target: torch.Tensor) -> torch.Tensor:
        """Read each candidate's buckets from the user state. O(m D) per candidate."""
        buckets = state.buckets  # (B_s, m, C, D), B_s = B or 1
        t, kind = _candidates_for(target, buckets.shape[0])  # (B, K, D)
        b, k, d = t.shape
        m, c = self.num_hashes, self.num_buckets
        row = self.codes(t) + self.offsets  # (B, K, m): row of each bucket in one user's state
        if buckets.shape[0] > 1:
            row = row + (torch.arange(b, device=row.device) * (m * c)).view(b, 1, 1)
        flat = buckets.reshape(-1, buckets.shape[-1])  # (B_s·m·C, D)
        picked = flat.index_select(0, row.reshape(-1)).view(b, k, m, d)
        if self.normalize:
            picked = nn.functional.normalize(picked, dim=-1)
        return _restore(picked.mean(2), kind)  # (B, K, D)

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.attend(self.encode_history(history, mask), target)


class ETAState(NamedTuple):
    """The user side of ETA: the history (zeros at padding), its mask and its signatures
    (B, L, bits)."""

    history: torch.Tensor
    mask: torch.Tensor
    signatures: torch.Tensor


class ETA(nn.Module):
    """ETA: Hamming top-k retrieval with SimHash, then multi-head target attention.

    Args:
        dim: D, width of history and target vectors.
        num_bits: signature length in bits.
        top_k: behaviours retrieved per candidate.
        num_heads, attention_dim, use_scale: of the :class:`MultiHeadTargetAttention`.
        seed: seed of the random projection.

    Shapes: as :class:`SDIM`; the output width is ``attention_dim`` (default D).
    """

    def __init__(
        self,
        dim: int,
        num_bits: int = 32,
        top_k: int = 16,
        num_heads: int = 1,
        attention_dim: int | None = None,
        use_scale: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.hash = SimHash(dim, num_bits, seed)
        self.attention = MultiHeadTargetAttention(
            dim, dim, attention_dim, num_heads=num_heads, use_scale=use_scale
        )

    def encode_history(self, history: torch.Tensor, mask: torch.Tensor) -> ETAState:
        """Signatures of the behaviours, once per user. O(B L D bits)."""
        check_history(history, mask)
        hist = mask_padding(history, mask)
        return ETAState(hist, mask, self.hash(hist))

    def retrieve(self, state: ETAState, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k by Hamming distance: candidates (B, K, D) -> index (B, K, k), mask (B, K, k)."""
        signature = self.hash(target)  # (B, K, bits)
        distance = (signature.unsqueeze(2) != state.signatures.unsqueeze(1)).sum(-1)  # (B,K,L)
        # Equal distances go to the more recent behaviour (rank 1 = latest): integers below
        # 2^24, exact in float32, and the same whichever side the padding is on.
        rank = recency_positions(state.mask).unsqueeze(1)  # (B, 1, L)
        key = distance * (state.mask.shape[1] + 1) + rank
        return select_top_k(key.float(), state.mask.unsqueeze(1), self.top_k, largest=False)

    def attend(self, state: ETAState, target: torch.Tensor) -> torch.Tensor:
        t, kind = _candidates_for(target, state.history.shape[0])
        b = t.shape[0]
        if state.history.shape[0] != b:  # one user's state, many candidate rows
            state = ETAState(*(x.expand(b, *x.shape[1:]) for x in state))
        index, found = self.retrieve(state, t)
        retrieved = gather_positions(state.history, index)  # (B, K, k, D)
        return _restore(self.attention(t, retrieved, found), kind)

    def forward(
        self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.attend(self.encode_history(history, mask), target)
