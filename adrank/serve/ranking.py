"""Ad ranking: creative selection and a conversion-priced generalized second-price auction.

Pure maths over plain Python objects (no web framework). The HTTP service calls
:func:`rank_ads` with a function that scores a list of raw records in one batch and returns
the model's probabilities by output name (``pctr``, ``pcvr``, ``pctcvr``).

Request model:

* each candidate ad has an ``ad_id``, a ``billing`` type (``cpc``, ``cpa`` or ``ocpc``), a
  ``bid`` per billing type (per click for ``cpc``, per conversion for ``cpa`` and ``ocpc``),
  ad-level ``features`` and optionally ``creatives`` (each with a ``creative_id`` and
  creative-level ``features``);
* the record scored for an (ad, creative) pair is ``context ∪ ad.features ∪
  creative.features``; on a key clash the more specific level wins (creative over ad over
  context);
* all pairs of all ads are scored in **one** batched call, and each ad keeps its creative
  with the highest q (below: pCTR for ``cpc``, pCTCVR otherwise; ties: the creative listed
  first). This is the parallel ads-and-creatives ranking of Yang et al. (AAAI 2024) reduced
  to its serving step: one scoring pass over the ad x creative pairs instead of a
  creative-selection stage per ad.

Auction (money in the bid's currency; R, the reserve, is in eCPM units, per 1000 impressions):

* q_i = pCTR_i for ``cpc``; q_i = pCTCVR_i for ``cpa`` and ``ocpc`` (``ocpc`` bids per
  conversion but pays per click);
* ranking score s_i = 1000 × bid_i × q_i (the expected revenue per 1000 impressions, eCPM);
* **eligible** iff q_i > 0 and s_i ≥ R (an ``ocpc`` ad also needs pCTR_i > 0, which
  pCTCVR_i > 0 implies when pCTCVR = pCTR × pCVR);
* eligible ads are ranked by s descending; **ties** go to the smaller ``ad_id`` (compared as
  strings), so the order is deterministic and never depends on bids in different units;
* the ad in a slot pays per its own billing event, with s_next the next-ranked eligible
  ad's score (which may itself be outside the slots), or 0 for the last eligible ad:

  - ``cpc`` (per click) and ``cpa`` (per conversion): p_i = min(bid_i, max(s_next, R) /
    (1000 × q_i));
  - ``ocpc`` (per click): p_i = min(bid_i × pCVR_i, max(s_next, R) / (1000 × pCTR_i)).

  In every case the expected payment per 1000 impressions is max(s_next, R), capped at s_i;
* ``slots`` bounds how many ads are returned; with fewer eligible ads, fewer slots fill.

**Legacy per-click reserve.** ``reserve_price`` r (per click) is the reserve of the first
version of this service. It is allowed only when every candidate is ``cpc`` and is applied
per candidate as R_i = 1000 × r × pCTR_i, which is exactly the old rule: eligible iff bid_i ≥
r, and p_i = min(bid_i, max(s_next / (1000 × pCTR_i), r)) (the last eligible ad pays r).
``reserve_price`` and ``reserve_ecpm`` are not combined: give one of them.

Budget pacing and bid shading are out of scope.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from adrank.serve.columnar import PairRecords

Billing = Literal["cpc", "cpa", "ocpc"]
BILLING_TYPES: tuple[str, ...] = get_args(Billing)
#: The event each billing type pays for.
BILLING_EVENTS: dict[str, str] = {"cpc": "click", "cpa": "conversion", "ocpc": "click"}
#: The model outputs each billing type needs (``pctcvr`` and ``pcvr`` may be derived).
REQUIRED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "cpc": ("pctr",),
    "cpa": ("pctr", "pctcvr"),
    "ocpc": ("pctr", "pcvr", "pctcvr"),
}


class BillingError(ValueError):
    """A candidate's billing type needs an output the model does not give. ``index`` is the
    candidate's position in the request."""

    def __init__(self, message: str, *, index: int, ad_id: str | int, missing: list[str]):
        super().__init__(message)
        self.index = index
        self.ad_id = ad_id
        self.missing = missing


# Creative and AdCandidate are built per candidate per request: slotted, not frozen (a
# frozen dataclass's __init__ costs ~5x more); nothing mutates them.
@dataclass(slots=True)
class Creative:
    creative_id: str | int
    features: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AdCandidate:
    """One ad in the auction (``creatives`` empty: the ad is scored as is); ``bid`` is per
    click for ``cpc`` and per conversion for ``cpa`` and ``ocpc``."""

    ad_id: str | int
    bid: float
    features: Mapping[str, Any] = field(default_factory=dict)
    creatives: Sequence[Creative] = ()
    billing: str = "cpc"


@dataclass(frozen=True)
class ScoredAd:
    """An ad with its chosen creative and probabilities (input to :func:`gsp_auction`).
    ``pcvr``/``pctcvr`` are ``None`` when the model has no conversion output."""

    ad_id: str | int
    bid: float
    pctr: float
    creative_id: str | int | None = None
    billing: str = "cpc"
    pcvr: float | None = None
    pctcvr: float | None = None

    @property
    def q(self) -> float:
        """The probability of the billing type's ranking event (pCTR or pCTCVR)."""
        if self.billing == "cpc":
            return self.pctr
        if self.pctcvr is None:
            raise ValueError(f"ad {self.ad_id!r} bids {self.billing} but has no pctcvr")
        return self.pctcvr

    @property
    def score(self) -> float:
        """s = 1000 × bid × q (computed as ``bid * q * 1000`` as in the first version)."""
        return self.bid * self.q * 1000.0

    @property
    def ecpm(self) -> float:
        return self.score


@dataclass(frozen=True)
class SlotResult:
    """One filled slot (``slot`` counts from 1). ``price`` is per ``billing_event`` (a click
    for ``cpc`` and ``ocpc``, a conversion for ``cpa``); ``ecpm`` equals ``score``."""

    slot: int
    ad_id: str | int
    creative_id: str | int | None
    bid: float
    pctr: float
    ecpm: float
    price: float
    billing: str = "cpc"
    billing_event: str = "click"
    q: float = 0.0
    score: float = 0.0
    pcvr: float | None = None
    pctcvr: float | None = None


@dataclass(frozen=True)
class PairIndex:
    """Which ad (and which of its creatives, -1 for none) each scored record belongs to."""

    ad: np.ndarray  # (P,) int64
    creative: np.ndarray  # (P,) int64


def expand_pairs(
    context: Mapping[str, Any], ads: Sequence[AdCandidate]
) -> tuple[list[dict[str, Any]], PairIndex]:
    """One record per (ad, creative) pair (one per ad without creatives) -> (records, index)."""
    records, index = pair_records(context, ads)
    return list(records), index  # type: ignore[arg-type]


def pair_records(
    context: Mapping[str, Any], ads: Sequence[AdCandidate]
) -> tuple[PairRecords, PairIndex]:
    """The records of :func:`expand_pairs` as a :class:`~adrank.serve.columnar.PairRecords`
    (the context kept apart from each pair's ad and creative features)."""
    rows: list[Mapping[str, Any]] = []
    ad_idx: list[int] = []
    creative_idx: list[int] = []
    for i, ad in enumerate(ads):
        if not ad.creatives:
            rows.append(ad.features)
            ad_idx.append(i)
            creative_idx.append(-1)
            continue
        for j, creative in enumerate(ad.creatives):
            rows.append({**ad.features, **creative.features})
            ad_idx.append(i)
            creative_idx.append(j)
    index = PairIndex(np.asarray(ad_idx, np.int64), np.asarray(creative_idx, np.int64))
    return PairRecords(context, rows), index


def check_billing(
    ads: Sequence[AdCandidate],
    outputs: Collection[str],
    *,
    model_outputs: Sequence[str] | None = None,
    hint: str | None = None,
) -> None:
    """Raise :class:`BillingError` for the first ad whose billing type needs an output that
    is not in ``outputs`` (or whose billing type is unknown). The message lists
    ``model_outputs`` as what the model gives (default: ``outputs``, sorted), and ends with
    ``hint`` when given (default: for a conversion bid, serve a model with conversion
    outputs)."""
    kinds = {ad.billing for ad in ads}
    if all(k in REQUIRED_OUTPUTS and set(REQUIRED_OUTPUTS[k]) <= set(outputs) for k in kinds):
        return  # the usual case: one check per billing type, not per ad
    for i, ad in enumerate(ads):
        if ad.billing not in REQUIRED_OUTPUTS:
            raise BillingError(
                f"candidate {i} (ad_id {ad.ad_id!r}): unknown billing {ad.billing!r}; "
                f"expected one of {list(BILLING_TYPES)}",
                index=i,
                ad_id=ad.ad_id,
                missing=[],
            )
        missing = [o for o in REQUIRED_OUTPUTS[ad.billing] if o not in outputs]
        if missing:
            gives = sorted(outputs) if model_outputs is None else list(model_outputs)
            if hint is None:
                hint = (
                    "; serve a model with click and conversion outputs (pctr and pcvr, e.g. "
                    "esmm) or bid cpc"
                    if ad.billing != "cpc"
                    else ""
                )
            raise BillingError(
                f"candidate {i} (ad_id {ad.ad_id!r}) bids {ad.billing}, which needs the "
                f"model output(s) {missing}; this model gives {gives}{hint}",
                index=i,
                ad_id=ad.ad_id,
                missing=missing,
            )


def _as_outputs(scores: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(scores, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    pctr = np.asarray(scores, dtype=np.float64)
    if pctr.ndim != 1:
        raise ValueError(f"ranking needs one pCTR per record, got shape {pctr.shape}")
    return {"pctr": pctr}


@dataclass(frozen=True)
class ChosenPairs:
    """Each ad's chosen (ad, creative) pair and its probabilities, as arrays over the ads
    (``pcvr``/``pctcvr`` None when the model has no conversion output)."""

    first: np.ndarray  # (n,) int64: the chosen pair of each ad
    pctr: np.ndarray  # (n,) float64
    pcvr: np.ndarray | None
    pctcvr: np.ndarray | None


def choose_pairs(
    ads: Sequence[AdCandidate],
    scores: Mapping[str, np.ndarray] | np.ndarray,
    index: PairIndex,
) -> ChosenPairs:
    """Each ad's best creative by its q (first listed on ties), from pair scores: output name
    -> (P,), or a pCTR array (P,). Array form of :func:`select_creatives`."""
    outputs = _as_outputs(scores)
    for name, values in outputs.items():
        if values.shape != index.ad.shape:
            raise ValueError(
                f"expected {index.ad.shape[0]} pair scores, got shape {values.shape} for {name}"
            )
    n = len(ads)
    if len(index.ad) == n:  # one pair per ad (the usual case without creatives)
        first = np.arange(n)
    else:
        q = outputs["pctr"]
        conversion = np.array([ad.billing != "cpc" for ad in ads])[index.ad]
        if conversion.any():
            q = np.where(conversion, outputs["pctcvr"], q)
        q = np.where(np.isnan(q), -np.inf, q)  # a NaN score never wins (and never matches)
        best = np.full(n, -np.inf)
        np.maximum.at(best, index.ad, q)
        is_best = q == best[index.ad]  # first pair (in listing order) reaching the maximum
        first = np.full(n, len(q), dtype=np.int64)
        np.minimum.at(first, index.ad[is_best], np.flatnonzero(is_best))
    pcvr, pctcvr = outputs.get("pcvr"), outputs.get("pctcvr")
    return ChosenPairs(
        first,
        outputs["pctr"][first],
        None if pcvr is None else pcvr[first],
        None if pctcvr is None else pctcvr[first],
    )


def _scored_ad(ad: AdCandidate, i: int, chosen: ChosenPairs, index: PairIndex) -> ScoredAd:
    return ScoredAd(
        ad.ad_id,
        float(ad.bid),
        float(chosen.pctr[i]),
        _creative_id(ad, int(index.creative[chosen.first[i]])),
        ad.billing,
        None if chosen.pcvr is None else float(chosen.pcvr[i]),
        None if chosen.pctcvr is None else float(chosen.pctcvr[i]),
    )


def select_creatives(
    ads: Sequence[AdCandidate],
    scores: Mapping[str, np.ndarray] | np.ndarray,
    index: PairIndex,
) -> list[ScoredAd]:
    """Each ad's best creative by its q (first listed on ties), from pair scores: output name
    -> (P,), or a pCTR array (P,)."""
    chosen = choose_pairs(ads, scores, index)
    return [_scored_ad(ad, i, chosen, index) for i, ad in enumerate(ads)]


def _creative_id(ad: AdCandidate, position: int) -> str | int | None:
    return ad.creatives[position].creative_id if position >= 0 else None


def _check_reserves(
    ads: Sequence[ScoredAd] | Sequence[AdCandidate], reserve_price: float, reserve_ecpm: float
) -> None:
    for name, value in (("reserve_price", reserve_price), ("reserve_ecpm", reserve_ecpm)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if reserve_price > 0 and reserve_ecpm > 0:
        raise ValueError(
            "give reserve_ecpm (per 1000 impressions) or the legacy per-click reserve_price, "
            "not both"
        )
    if reserve_price > 0:
        other = next((a for a in ads if a.billing != "cpc"), None)
        if other is not None:
            raise ValueError(
                f"reserve_price is per click and applies only when every candidate is cpc; "
                f"ad {other.ad_id!r} bids {other.billing}: give reserve_ecpm instead"
            )


def is_eligible(ad: ScoredAd, reserve_price: float = 0.0, reserve_ecpm: float = 0.0) -> bool:
    """Can enter the auction: q > 0 and s ≥ R (legacy: bid ≥ the per-click reserve)."""
    if not math.isfinite(ad.bid) or not ad.q > 0:
        return False
    if ad.billing == "ocpc" and not (ad.pctr > 0 and ad.pcvr is not None):
        return False
    if reserve_price > 0:
        return ad.bid >= reserve_price
    return ad.score >= reserve_ecpm


def ranking_key(ad: ScoredAd) -> tuple[float, str]:
    """Sort key: score descending, then ad_id (as a string) ascending."""
    return (-ad.score, str(ad.ad_id))


def price(
    ad: ScoredAd, next_score: float, reserve_price: float = 0.0, reserve_ecpm: float = 0.0
) -> float:
    """The price per billing event of a slotted ``ad`` (see the module docstring)."""
    if ad.billing == "ocpc":
        per = ad.pctr * 1000.0
        cap = ad.bid * ad.pcvr  # type: ignore[operator]
        return min(cap, max(next_score / per, reserve_ecpm / per))
    per = ad.q * 1000.0
    floor = reserve_price if reserve_price > 0 else reserve_ecpm / per
    return min(ad.bid, max(next_score / per, floor))


def gsp_auction(
    ads: Sequence[ScoredAd],
    slots: int,
    reserve_price: float = 0.0,
    *,
    reserve_ecpm: float = 0.0,
) -> list[SlotResult]:
    """Rank eligible ads by score and price the top ``slots`` (see the module docstring).
    ``reserve_ecpm`` is R; ``reserve_price`` is the legacy per-click reserve (CPC only)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    _check_reserves(ads, reserve_price, reserve_ecpm)
    eligible = sorted(
        (a for a in ads if is_eligible(a, reserve_price, reserve_ecpm)), key=ranking_key
    )
    results = []
    for i, ad in enumerate(eligible[:slots]):
        next_score = eligible[i + 1].score if i + 1 < len(eligible) else 0.0
        results.append(
            SlotResult(
                slot=i + 1,
                ad_id=ad.ad_id,
                creative_id=ad.creative_id,
                bid=ad.bid,
                pctr=ad.pctr,
                ecpm=ad.score,
                price=price(ad, next_score, reserve_price, reserve_ecpm),
                billing=ad.billing,
                billing_event=BILLING_EVENTS[ad.billing],
                q=ad.q,
                score=ad.score,
                pcvr=ad.pcvr,
                pctcvr=ad.pctcvr,
            )
        )
    return results


@dataclass(frozen=True)
class RankResult:
    slots: list[SlotResult]
    scored_pairs: int
    eligible_ads: int


def rank_ads(
    score: Callable[[list[dict[str, Any]]], Mapping[str, np.ndarray] | np.ndarray],
    context: Mapping[str, Any],
    ads: Sequence[AdCandidate],
    slots: int,
    reserve_price: float = 0.0,
    *,
    reserve_ecpm: float = 0.0,
) -> RankResult:
    """Score every (ad, creative) pair with one ``score(records)`` call (probabilities by
    output name, or a pCTR array (P,)), pick each ad's best creative and run the auction.
    Raises :class:`BillingError` when an ad's billing type needs an output the scores lack."""
    if not ads:
        return RankResult([], 0, 0)
    records, index = pair_records(context, ads)
    outputs = _as_outputs(score(records))
    check_billing(ads, outputs)
    chosen = choose_pairs(ads, outputs, index)
    top, eligible = _top_eligible(ads, chosen, slots + 1, reserve_price, reserve_ecpm)
    scored = [_scored_ad(ads[i], i, chosen, index) for i in top]
    result = gsp_auction(scored, slots, reserve_price, reserve_ecpm=reserve_ecpm)
    return RankResult(result, len(records), eligible)


def _top_eligible(
    ads: Sequence[AdCandidate],
    chosen: ChosenPairs,
    k: int,
    reserve_price: float,
    reserve_ecpm: float,
) -> tuple[list[int], int]:
    """The ``k`` best eligible ads in auction order (positions in ``ads``) and how many are
    eligible: :func:`is_eligible` and :func:`ranking_key` over arrays, with the same float
    operations, so that :func:`gsp_auction` on these ``k`` ads (the slotted ones and the
    next, which sets the last price) gives the auction over all of them."""
    _check_reserves(ads, reserve_price, reserve_ecpm)
    billing = [ad.billing for ad in ads]
    cpc = np.array([b == "cpc" for b in billing])
    bid = np.array([ad.bid for ad in ads], dtype=np.float64)
    q = chosen.pctr
    if not cpc.all():  # check_billing made sure pctcvr exists
        q = np.where(cpc, q, chosen.pctcvr)  # type: ignore[arg-type]
    score = bid * q * 1000.0
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bid) & (q > 0)
        ocpc = np.array([b == "ocpc" for b in billing])
        if ocpc.any():
            ok &= ~ocpc | ((chosen.pctr > 0) & (chosen.pcvr is not None))
        ok &= bid >= reserve_price if reserve_price > 0 else score >= reserve_ecpm
    eligible = np.flatnonzero(ok)
    keep = eligible
    if len(eligible) > k:  # only ads scoring at least the k-th best can be in the top k
        kth_best = -np.partition(-score[eligible], k - 1)[k - 1]
        keep = eligible[score[eligible] >= kth_best]
    scores = score.tolist()
    top = sorted(keep.tolist(), key=lambda i: (-scores[i], str(ads[i].ad_id)))[:k]
    return top, len(eligible)
