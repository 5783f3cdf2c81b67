"""The conversion-priced auction (CPC, CPA, oCPC) against hand-computed results.

Probabilities and bids are binary fractions, so scores and prices are exact. Notation as in
:mod:`adrank.serve.ranking`: q = pCTR (cpc) or pCTCVR (cpa, ocpc), s = 1000 × bid × q.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adrank.serve.ranking import (
    AdCandidate,
    BillingError,
    Creative,
    ScoredAd,
    gsp_auction,
    rank_ads,
)


def cpc(ad_id: str, bid: float, pctr: float) -> ScoredAd:
    return ScoredAd(ad_id, bid, pctr, billing="cpc")


def conv(ad_id: str, billing: str, bid: float, pctr: float, pcvr: float) -> ScoredAd:
    return ScoredAd(ad_id, bid, pctr, billing=billing, pcvr=pcvr, pctcvr=pctr * pcvr)


def table(results) -> list[tuple[Any, str, str, float, float, float]]:
    return [(r.ad_id, r.billing, r.billing_event, r.q, r.score, r.price) for r in results]


MIXED = [
    cpc("a", 2.0, 0.25),  # q 0.25, s = 500
    conv("b", "cpa", 24.0, 0.125, 0.25),  # q = 0.03125, s = 750
    conv("c", "ocpc", 32.0, 0.0625, 0.125),  # q = 0.0078125, s = 250
    cpc("d", 1.0, 0.125),  # s = 125
]


def test_mixed_cpc_cpa_ocpc_auction_hand_computed() -> None:
    out = gsp_auction(MIXED, slots=3)
    assert table(out) == [
        # b pays per conversion: min(24, 500 / (1000 × 0.03125)) = 16
        ("b", "cpa", "conversion", 0.03125, 750.0, 16.0),
        # a pays per click: min(2, 250 / (1000 × 0.25)) = 1
        ("a", "cpc", "click", 0.25, 500.0, 1.0),
        # c pays per click: 125 / (1000 × 0.0625) = 2, under its cap 32 × 0.125 = 4
        ("c", "ocpc", "click", 0.0078125, 250.0, 2.0),
    ]
    assert [r.slot for r in out] == [1, 2, 3]
    assert [r.ecpm for r in out] == [r.score for r in out]
    assert out[0].pcvr == 0.25 and out[0].pctcvr == 0.03125 and out[1].pcvr is None
    # every winner's expected payment per 1000 impressions is the next score
    per_event = {"click": lambda r: r.pctr, "conversion": lambda r: r.pctcvr}
    assert [r.price * per_event[r.billing_event](r) * 1000 for r in out] == [500, 250, 125]
    # input order does not matter
    assert table(gsp_auction(MIXED[::-1], slots=3)) == table(out)


def test_reserve_in_ecpm_units() -> None:
    # R = 375: c (250) and d (125) are not eligible; a, last, is priced at the reserve
    out = gsp_auction(MIXED, slots=4, reserve_ecpm=375.0)
    assert table(out) == [
        ("b", "cpa", "conversion", 0.03125, 750.0, 16.0),  # 500 / 31.25
        ("a", "cpc", "click", 0.25, 500.0, 1.5),  # 375 / 250
    ]
    # R above the next score floors the price: R = 625 -> b pays 625 / 31.25 = 20
    assert table(gsp_auction(MIXED, slots=2, reserve_ecpm=625.0)) == [
        ("b", "cpa", "conversion", 0.03125, 750.0, 20.0)
    ]
    # eligibility is s >= R, equality included; an ocpc winner alone pays R / (1000 pCTR)
    ocpc = conv("c", "ocpc", 32.0, 0.0625, 0.125)
    assert table(gsp_auction([ocpc], slots=1, reserve_ecpm=250.0)) == [
        ("c", "ocpc", "click", 0.0078125, 250.0, 4.0)
    ]
    assert gsp_auction([ocpc], slots=1, reserve_ecpm=250.5) == []


def test_ties_break_by_ad_id_not_by_bid() -> None:
    ads = [cpc("b", 2.0, 0.125), cpc("a", 1.0, 0.25), conv("c", "cpa", 8.0, 0.25, 0.125)]
    out = gsp_auction(ads, slots=3)  # all three score 250
    assert [r.ad_id for r in out] == ["a", "b", "c"]
    # a tie prices at the bid itself (never above it); the last pays the reserve (0)
    assert [r.price for r in out] == [1.0, 2.0, 0.0]


def test_ocpc_price_is_capped_at_bid_times_pcvr() -> None:
    # tied with the next ad: the per-click price reaches its cap bid × pCVR exactly
    ocpc = conv("e", "ocpc", 8.0, 0.5, 0.25)  # s = 1000, cap 2 per click
    out = gsp_auction([ocpc, cpc("f", 4.0, 0.25)], slots=1)  # f: s = 1000
    assert table(out) == [("e", "ocpc", "click", 0.125, 1000.0, 2.0)]
    # pCTCVR above pCTR (outputs emitted separately; pCVR derived and clipped to 1): the
    # cap binds below max(s_next, R) / (1000 pCTR) = 750 / 125 = 6
    odd = ScoredAd("g", 4.0, 0.125, billing="ocpc", pcvr=1.0, pctcvr=0.25)  # s = 1000
    out = gsp_auction([odd, cpc("h", 3.0, 0.25)], slots=1)  # h: s = 750
    assert table(out) == [("g", "ocpc", "click", 0.25, 1000.0, 4.0)]


def test_zero_q_is_not_eligible() -> None:
    ads = [
        conv("a", "cpa", 1e6, 0.5, 0.0),  # pCTCVR 0: no chance of a conversion
        conv("b", "ocpc", 1e6, 0.0, 0.5),
        cpc("c", 1e6, 0.0),
        cpc("d", 1.0, 0.5),
    ]
    out = gsp_auction(ads, slots=4)
    assert [r.ad_id for r in out] == ["d"]


def legacy_gsp(ads: list[ScoredAd], slots: int, reserve: float) -> list[tuple[Any, float]]:
    """The first version's CPC rule, verbatim: eligible iff bid >= reserve and pCTR > 0;
    price = min(max(eCPM_next / (1000 pCTR), reserve), bid); the last pays the reserve."""
    eligible = sorted(
        (a for a in ads if a.bid >= reserve and a.pctr > 0),
        key=lambda a: (-a.bid * a.pctr * 1000.0, -a.bid, str(a.ad_id)),
    )
    out = []
    for i, ad in enumerate(eligible[:slots]):
        if i + 1 < len(eligible):
            nxt = eligible[i + 1].bid * eligible[i + 1].pctr * 1000.0
            out.append((ad.ad_id, min(max(nxt / (ad.pctr * 1000.0), reserve), ad.bid)))
        else:
            out.append((ad.ad_id, reserve))
    return out


def test_legacy_per_click_reserve_gives_the_first_versions_results() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        ads = [cpc(str(i), float(rng.choice([0.5, 1.0, 2.0, 3.0])), rng.random()) for i in range(n)]
        reserve = float(rng.choice([0.0, 0.5, 1.0, 2.5]))
        slots = int(rng.integers(1, 6))
        new = [(r.ad_id, r.price) for r in gsp_auction(ads, slots, reserve_price=reserve)]
        assert new == legacy_gsp(ads, slots, reserve)  # bit-identical prices


def test_reserve_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"reserve_price is per click.*ad 'b' bids cpa"):
        gsp_auction(MIXED, slots=1, reserve_price=0.5)
    with pytest.raises(ValueError, match="not both"):
        gsp_auction(MIXED[:1], slots=1, reserve_price=0.5, reserve_ecpm=10.0)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="reserve_ecpm must be a finite number"):
            gsp_auction(MIXED, slots=1, reserve_ecpm=bad)


def test_random_mixed_auctions_charge_the_next_score() -> None:
    """Each winner's expected payment per mille is max(s_next, R), never above its s."""
    rng = np.random.default_rng(1)
    billing = ["cpc", "cpa", "ocpc"]
    for _ in range(200):
        ads = []
        for i in range(int(rng.integers(1, 10))):
            kind = billing[int(rng.integers(0, 3))]
            pctr, pcvr = float(rng.random()), float(rng.random())
            bid = float(rng.choice([0.5, 1.0, 4.0])) * (1 if kind == "cpc" else 20)
            ads.append(conv(str(i), kind, bid, pctr, pcvr))
        reserve = float(rng.choice([0.0, 50.0, 200.0]))
        out = gsp_auction(ads, slots=int(rng.integers(1, 5)), reserve_ecpm=reserve)
        scores = [r.score for r in out]
        assert scores == sorted(scores, reverse=True)
        eligible = sorted((a.score for a in ads if a.q > 0 and a.score >= reserve), reverse=True)
        for i, r in enumerate(out):
            s_next = eligible[i + 1] if i + 1 < len(eligible) else 0.0
            per_mille = r.price * (r.pctcvr if r.billing_event == "conversion" else r.pctr) * 1000
            assert per_mille == pytest.approx(max(s_next, reserve), rel=1e-9)
            assert r.price <= r.bid * (r.pcvr if r.billing == "ocpc" else 1.0) * (1 + 1e-12)
        for r, nxt in itertools.pairwise(out):
            assert (r.score, str(nxt.ad_id)) >= (nxt.score, str(r.ad_id))


def outputs_of(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Deterministic scores: each record's ``ctr`` and ``cvr`` fields."""
    pctr = np.array([r["ctr"] for r in records])
    pcvr = np.array([r["cvr"] for r in records])
    return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}


def test_rank_ads_picks_each_ads_creative_by_its_own_q() -> None:
    creatives = (
        Creative("x1", {"ctr": 0.5, "cvr": 0.0625}),  # pCTCVR 0.03125
        Creative("x2", {"ctr": 0.25, "cvr": 0.25}),  # pCTCVR 0.0625
    )
    ads = [
        AdCandidate("cpc-ad", 1.0, {}, creatives, "cpc"),  # best by pCTR: x1
        AdCandidate("cpa-ad", 8.0, {}, creatives, "cpa"),  # best by pCTCVR: x2
    ]
    result = rank_ads(outputs_of, {"ctr": 0.0, "cvr": 0.0}, ads, slots=2)
    assert result.scored_pairs == 4 and result.eligible_ads == 2
    # cpc-ad: s = 1000 × 1 × 0.5 = 500; cpa-ad: s = 1000 × 8 × 0.0625 = 500: a tie, by ad_id
    assert [(r.ad_id, r.creative_id, r.score) for r in result.slots] == [
        ("cpa-ad", "x2", 500.0),
        ("cpc-ad", "x1", 500.0),
    ]
    assert [r.price for r in result.slots] == [8.0, 0.0]


def test_conversion_bids_need_a_conversion_output() -> None:
    def pctr_only(records: list[dict[str, Any]]) -> np.ndarray:
        return np.array([r["ctr"] for r in records])

    ads = [
        AdCandidate("a1", 1.0, {"ctr": 0.5}),
        AdCandidate("a2", 9.0, {"ctr": 0.5}, billing="ocpc"),
    ]
    with pytest.raises(BillingError, match=r"candidate 1 \(ad_id 'a2'\) bids ocpc") as info:
        rank_ads(pctr_only, {}, ads, slots=1)
    assert info.value.index == 1 and info.value.missing == ["pcvr", "pctcvr"]
    assert "this model gives ['pctr']" in str(info.value)
    # the same request with cpc bids only is fine
    assert rank_ads(pctr_only, {}, ads[:1], slots=1).slots[0].ad_id == "a1"


def test_serving_doc_example_runs(tmp_path: Path) -> None:
    """The Python examples in docs/serving.md run and their asserts hold (in subprocesses,
    in page order, in a temporary folder: a block may write files the next one reads)."""
    doc = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
