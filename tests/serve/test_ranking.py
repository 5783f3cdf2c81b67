"""Auction maths on hand-computed cases (binary fractions, so equalities are exact)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from adrank.serve.ranking import (
    AdCandidate,
    Creative,
    ScoredAd,
    expand_pairs,
    gsp_auction,
    is_eligible,
    rank_ads,
    select_creatives,
)


def summary(results) -> list[tuple[Any, float, float]]:
    return [(r.ad_id, r.ecpm, r.price) for r in results]


def test_two_slots_three_ads_second_price() -> None:
    ads = [
        ScoredAd("c", bid=3.0, pctr=0.015625),  # eCPM 46.875
        ScoredAd("a", bid=2.0, pctr=0.125),  # eCPM 250
        ScoredAd("b", bid=1.0, pctr=0.1875),  # eCPM 187.5
    ]
    out = gsp_auction(ads, slots=2)
    # a pays 187.5 / 125 = 1.5; b pays 46.875 / 187.5 = 0.25 (c is priced against but unslotted)
    assert summary(out) == [("a", 250.0, 1.5), ("b", 187.5, 0.25)]
    assert [r.slot for r in out] == [1, 2]


def test_reserve_floors_the_price_and_filters_low_bids() -> None:
    ads = [
        ScoredAd("a", bid=2.0, pctr=0.125),
        ScoredAd("b", bid=1.0, pctr=0.1875),
        ScoredAd("c", bid=3.0, pctr=0.015625),
    ]
    # reserve 0.5: b's second price 0.25 is floored to 0.5
    out = gsp_auction(ads, slots=2, reserve_price=0.5)
    assert summary(out) == [("a", 250.0, 1.5), ("b", 187.5, 0.5)]
    # reserve 1.25: b (bid 1) is not eligible; a is priced against c: 46.875/125 = 0.375,
    # floored to 1.25; c, last eligible, pays the reserve
    out = gsp_auction(ads, slots=3, reserve_price=1.25)
    assert summary(out) == [("a", 250.0, 1.25), ("c", 46.875, 1.25)]


def test_one_candidate_pays_reserve() -> None:
    assert summary(gsp_auction([ScoredAd("x", 4.0, 0.5)], slots=3)) == [("x", 2000.0, 0.0)]
    out = gsp_auction([ScoredAd("x", 4.0, 0.5)], slots=1, reserve_price=0.75)
    assert summary(out) == [("x", 2000.0, 0.75)]
    assert gsp_auction([ScoredAd("x", 0.5, 0.5)], slots=1, reserve_price=0.75) == []


def test_fewer_candidates_than_slots() -> None:
    ads = [ScoredAd("a", 1.0, 0.25), ScoredAd("b", 1.0, 0.125)]
    out = gsp_auction(ads, slots=5, reserve_price=0.125)
    assert summary(out) == [("a", 250.0, 0.5), ("b", 125.0, 0.125)]


def test_ties_break_on_ad_id() -> None:
    ads = [
        ScoredAd("z", bid=1.0, pctr=0.25),  # eCPM 250
        ScoredAd("y", bid=0.5, pctr=0.5),  # eCPM 250, "y" before "z" (the bid plays no part)
        ScoredAd("b", bid=1.0, pctr=0.125),  # eCPM 125
        ScoredAd("a", bid=0.5, pctr=0.25),  # eCPM 125, "a" before "b"
    ]
    out = gsp_auction(ads, slots=4)
    assert [r.ad_id for r in out] == ["y", "z", "a", "b"]
    # a tie prices at the bid itself (never above it)
    assert [r.price for r in out] == [0.5, 0.5, 0.5, 0.0]
    # input order does not matter
    assert summary(gsp_auction(ads[::-1], slots=4)) == summary(out)


def test_zero_pctr_is_not_eligible_and_bad_arguments() -> None:
    out = gsp_auction([ScoredAd("a", 1.0, 0.0), ScoredAd("b", 1.0, 0.5)], slots=2)
    assert [r.ad_id for r in out] == ["b"]
    with pytest.raises(ValueError, match="slots"):
        gsp_auction([], slots=0)
    with pytest.raises(ValueError, match="reserve_price"):
        gsp_auction([], slots=1, reserve_price=-1)


def test_gsp_invariants_on_random_auctions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ads = [
            ScoredAd(str(i), float(rng.choice([0.5, 1.0, 2.0, 3.0])), float(rng.random()))
            for i in range(n)
        ]
        reserve = float(rng.choice([0.0, 0.5, 1.0]))
        out = gsp_auction(ads, slots=int(rng.integers(1, 6)), reserve_price=reserve)
        ecpms = [r.ecpm for r in out]
        assert ecpms == sorted(ecpms, reverse=True)
        for r in out:
            assert reserve <= r.price <= r.bid
        # the price per click is the least that keeps the ad's eCPM at the next one's
        for r, nxt in itertools.pairwise(out):
            assert r.price * r.pctr * 1000 == pytest.approx(max(nxt.ecpm, reserve * r.pctr * 1000))


def pctr_of(record: dict[str, Any]) -> float:
    """A deterministic score: the record's ``q`` field."""
    return float(record["q"])


def test_creative_selection_in_one_batched_pass() -> None:
    calls: list[int] = []

    def score(records: list[dict[str, Any]]) -> np.ndarray:
        calls.append(len(records))
        return np.array([pctr_of(r) for r in records])

    ads = [
        AdCandidate(
            "a",
            2.0,
            {"q": 0.5},
            (
                Creative("a1", {"q": 0.0625}),
                Creative("a2", {"q": 0.25}),
                Creative("a3", {"q": 0.25}),
            ),
        ),
        AdCandidate("b", 1.0, {"q": 0.375}),  # no creatives: scored as is
        AdCandidate("c", 4.0, {}, (Creative("c1", {"q": 0.03125}),)),  # q from the context
    ]
    result = rank_ads(score, {"q": 0.015625, "site": "s"}, ads, slots=3)
    assert calls == [5]  # 3 + 1 + 1 pairs, one call
    assert result.scored_pairs == 5 and result.eligible_ads == 3
    # a: best creative a2 (0.25; a3 ties but is listed later) -> eCPM 500
    # b: 0.375 -> eCPM 375; c: creative overrides context -> 0.03125 -> eCPM 125
    assert [(r.ad_id, r.creative_id, r.pctr) for r in result.slots] == [
        ("a", "a2", 0.25),
        ("b", None, 0.375),
        ("c", "c1", 0.03125),
    ]
    # a pays 375 / 250 = 1.5, b pays 125 / 375, c (last) pays the reserve 0
    assert [r.price for r in result.slots] == [1.5, 1 / 3, 0.0]


def test_expand_pairs_precedence_and_index() -> None:
    ads = [AdCandidate(1, 1.0, {"x": "ad"}, (Creative(7, {"x": "cr"}), Creative(8, {})))]
    records, index = expand_pairs({"x": "ctx", "y": 1}, ads)
    assert records == [{"x": "cr", "y": 1}, {"x": "ad", "y": 1}]
    assert index.ad.tolist() == [0, 0] and index.creative.tolist() == [0, 1]
    best = select_creatives(ads, np.array([0.5, 0.5]), index)
    assert best[0].creative_id == 7
    with pytest.raises(ValueError, match="pair scores"):
        select_creatives(ads, np.array([0.5]), index)


def test_rank_ads_equals_the_auction_over_every_scored_ad() -> None:
    """rank_ads builds objects only for the top slots + 1 eligible ads (array maths for the
    rest); it must give exactly the auction over all of them: random mixes of billing types,
    creatives, ties, zero and NaN probabilities, and both reserves."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 30))
        ads = []
        for i in range(n):
            billing = str(rng.choice(["cpc", "cpa", "ocpc"])) if trial % 2 else "cpc"
            creatives = tuple(Creative(f"c{j}") for j in range(int(rng.integers(0, 3))))
            bid = float(rng.choice([0.5, 1.0, 2.0, 4.0]))  # ties are frequent
            ads.append(AdCandidate(str(rng.integers(0, 50)) + f"-{i}", bid, {}, creatives, billing))
        pairs = sum(len(a.creatives or (None,)) for a in ads)
        pctr = rng.choice([0.0, 0.125, 0.25, 0.5, np.nan], size=pairs, p=[0.1, 0.3, 0.3, 0.2, 0.1])
        pcvr = rng.choice([0.0, 0.25, 0.5], size=pairs)
        outputs = {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}
        slots = int(rng.integers(1, 6))
        reserve = {"reserve_ecpm": float(rng.choice([0.0, 100.0, 400.0]))}
        if trial % 2 == 0 and rng.random() < 0.5:
            reserve = {"reserve_price": float(rng.choice([0.5, 1.0]))}
        result = rank_ads(lambda records, o=outputs: o, {}, ads, slots, **reserve)
        _, index = expand_pairs({}, ads)
        everyone = select_creatives(ads, outputs, index)
        legacy = reserve.get("reserve_price", 0.0)
        expected = gsp_auction(everyone, slots, legacy, reserve_ecpm=reserve.get("reserve_ecpm", 0))
        assert result.slots == expected
        eligible = sum(is_eligible(a, legacy, reserve.get("reserve_ecpm", 0)) for a in everyone)
        assert result.eligible_ads == eligible and result.scored_pairs == pairs


def test_top_eligible_preselection_matches_a_full_sort_with_ties() -> None:
    """The k-th-best pre-selection gives the full sort's top k, ties broken by ad id."""
    from adrank.serve.ranking import ChosenPairs, _top_eligible

    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        bids = rng.choice([0.5, 1.0, 2.0], size=n)  # few values: many tied scores
        pctr = rng.choice([0.0, 0.25, 0.5], size=n)
        ads = [AdCandidate(f"ad{rng.integers(0, 1000)}-{i}", float(b)) for i, b in enumerate(bids)]
        chosen = ChosenPairs(np.arange(n), pctr.astype(np.float64), None, None)
        k = int(rng.integers(1, 6))
        top, eligible = _top_eligible(ads, chosen, k, 0.0, 0.0)
        score = bids * pctr * 1000.0
        ok = [i for i in range(n) if pctr[i] > 0]
        expected = sorted(ok, key=lambda i: (-score[i], str(ads[i].ad_id)))[:k]
        assert (top, eligible) == (expected, len(ok)), trial
