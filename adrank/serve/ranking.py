"""Ad ranking: creative selection, eCPM ranking and a generalized second-price auction.

Pure maths over plain Python objects (no web framework). The HTTP service calls
:func:`rank_ads` with a pCTR function that scores a list of raw records in one batch.

Request model:

* each candidate ad has an ``ad_id``, a ``bid`` per click, ad-level ``features`` and
  optionally ``creatives`` (each with a ``creative_id`` and creative-level ``features``);
* the record scored for an (ad, creative) pair is ``context ∪ ad.features ∪
  creative.features``; on a key clash the more specific level wins (creative over ad over
  context);
* all pairs of all ads are scored in **one** batched call, and each ad keeps its creative
  with the highest pCTR (ties: the creative listed first). This is the parallel
  ads-and-creatives ranking of Yang et al. (AAAI 2024) reduced to its serving step: one
  scoring pass over the ad x creative pairs instead of a creative-selection stage per ad.

Auction (all prices are per click, in the bid's currency):

* ``eCPM = bid × pCTR × 1000``;
* **eligible**: ``bid >= reserve_price`` and ``pCTR > 0`` (an ad that cannot pay the reserve
  per click, or has no chance of a click, is dropped before ranking);
* eligible ads are ranked by eCPM, descending; **ties** go to the higher bid, then to the
  smaller ``ad_id`` (compared as strings), so the order is deterministic;
* the ad in slot *i* pays ``eCPM_(i+1) / (pCTR_i × 1000)`` = the least bid per click that
  keeps it above the next-ranked eligible ad (which may itself be outside the slots),
  floored at ``reserve_price`` and capped at its own bid; the last-ranked eligible ad (no
  one below it) pays ``reserve_price``;
* ``slots`` bounds how many ads are returned; with fewer eligible ads, fewer slots fill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Creative:
    creative_id: str | int
    features: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AdCandidate:
    """One ad in the auction (``creatives`` empty: the ad is scored as is)."""

    ad_id: str | int
    bid: float
    features: Mapping[str, Any] = field(default_factory=dict)
    creatives: Sequence[Creative] = ()


@dataclass(frozen=True)
class ScoredAd:
    """An ad with its chosen creative and pCTR (input to :func:`gsp_auction`)."""

    ad_id: str | int
    bid: float
    pctr: float
    creative_id: str | int | None = None

    @property
    def ecpm(self) -> float:
        return self.bid * self.pctr * 1000.0


@dataclass(frozen=True)
class SlotResult:
    """One filled slot (``slot`` counts from 1); ``price`` is per click."""

    slot: int
    ad_id: str | int
    creative_id: str | int | None
    bid: float
    pctr: float
    ecpm: float
    price: float


@dataclass(frozen=True)
class PairIndex:
    """Which ad (and which of its creatives, -1 for none) each scored record belongs to."""

    ad: np.ndarray  # (P,) int64
    creative: np.ndarray  # (P,) int64


def expand_pairs(
    context: Mapping[str, Any], ads: Sequence[AdCandidate]
) -> tuple[list[dict[str, Any]], PairIndex]:
    """One record per (ad, creative) pair (one per ad without creatives) -> (records, index)."""
    records: list[dict[str, Any]] = []
    ad_idx: list[int] = []
    creative_idx: list[int] = []
    for i, ad in enumerate(ads):
        base = {**context, **ad.features}
        if not ad.creatives:
            records.append(base)
            ad_idx.append(i)
            creative_idx.append(-1)
            continue
        for j, creative in enumerate(ad.creatives):
            records.append({**base, **creative.features})
            ad_idx.append(i)
            creative_idx.append(j)
    return records, PairIndex(np.asarray(ad_idx, np.int64), np.asarray(creative_idx, np.int64))


def select_creatives(
    ads: Sequence[AdCandidate], pctr: np.ndarray, index: PairIndex
) -> list[ScoredAd]:
    """Each ad's best creative by pCTR (first listed on ties), from pair scores (P,)."""
    pctr = np.asarray(pctr, dtype=np.float64)
    if pctr.shape != index.ad.shape:
        raise ValueError(f"expected {index.ad.shape[0]} pair scores, got shape {pctr.shape}")
    n = len(ads)
    if len(pctr) == n:  # one pair per ad (the usual case without creatives)
        return [
            ScoredAd(ad.ad_id, float(ad.bid), float(p), _creative_id(ad, int(c)))
            for ad, p, c in zip(ads, pctr.tolist(), index.creative.tolist(), strict=True)
        ]
    best = np.full(n, -np.inf)
    np.maximum.at(best, index.ad, pctr)
    # first pair (in listing order) that reaches its ad's maximum
    is_best = pctr == best[index.ad]
    first = np.full(n, len(pctr), dtype=np.int64)
    np.minimum.at(first, index.ad[is_best], np.flatnonzero(is_best))
    out = []
    for i, ad in enumerate(ads):
        p = int(first[i])
        out.append(
            ScoredAd(ad.ad_id, float(ad.bid), float(pctr[p]), _creative_id(ad, index.creative[p]))
        )
    return out


def _creative_id(ad: AdCandidate, position: int) -> str | int | None:
    return ad.creatives[position].creative_id if position >= 0 else None


def is_eligible(ad: ScoredAd, reserve_price: float) -> bool:
    """Can enter the auction: bids at least the reserve per click and has pCTR > 0."""
    return math.isfinite(ad.bid) and ad.bid >= reserve_price and ad.pctr > 0


def ranking_key(ad: ScoredAd) -> tuple[float, float, str]:
    """Sort key: eCPM desc, then bid desc, then ad_id (as a string) asc."""
    return (-ad.ecpm, -ad.bid, str(ad.ad_id))


def gsp_auction(
    ads: Sequence[ScoredAd], slots: int, reserve_price: float = 0.0
) -> list[SlotResult]:
    """Rank eligible ads by eCPM and price the top ``slots`` by GSP (see module docstring)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if not (reserve_price >= 0 and math.isfinite(reserve_price)):
        raise ValueError(f"reserve_price must be a finite number >= 0, got {reserve_price}")
    eligible = sorted(
        (a for a in ads if is_eligible(a, reserve_price)),
        key=ranking_key,
    )
    results = []
    for i, ad in enumerate(eligible[:slots]):
        if i + 1 < len(eligible):
            price = eligible[i + 1].ecpm / (ad.pctr * 1000.0)
            price = min(max(price, reserve_price), ad.bid)
        else:
            price = reserve_price
        results.append(SlotResult(i + 1, ad.ad_id, ad.creative_id, ad.bid, ad.pctr, ad.ecpm, price))
    return results


@dataclass(frozen=True)
class RankResult:
    slots: list[SlotResult]
    scored_pairs: int
    eligible_ads: int


def rank_ads(
    score: Callable[[list[dict[str, Any]]], np.ndarray],
    context: Mapping[str, Any],
    ads: Sequence[AdCandidate],
    slots: int,
    reserve_price: float = 0.0,
) -> RankResult:
    """Score every (ad, creative) pair with one ``score(records) -> pCTR (P,)`` call, pick
    each ad's best creative and run the GSP auction."""
    if not ads:
        return RankResult([], 0, 0)
    records, index = expand_pairs(context, ads)
    pctr = np.asarray(score(records), dtype=np.float64)
    if pctr.ndim != 1:
        raise ValueError(f"ranking needs one pCTR per record, got shape {pctr.shape}")
    scored = select_creatives(ads, pctr, index)
    eligible = sum(1 for a in scored if is_eligible(a, reserve_price))
    return RankResult(gsp_auction(scored, slots, reserve_price), len(records), eligible)
