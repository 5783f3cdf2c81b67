"""The request and response bodies of the HTTP service (pydantic models).

Requests are strict: an unknown field is a 422 that names it. Money fields (bids, reserves)
are finite numbers >= 0. The auction rules are in :mod:`adrank.serve.ranking`, and the
endpoints in :mod:`adrank.serve.app` and ``docs/serving.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adrank.serve.ranking import Billing

MAX_SLOTS = 100
FeatureValue = str | int | float | bool | None | list[str | int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    records: list[dict[str, FeatureValue]] = Field(min_length=1, description="raw records")


class PredictResponse(BaseModel):
    outputs: list[str] = Field(description="the output names of each prediction, in order")
    predictions: list[dict[str, float]] = Field(
        description="one {output: probability} object per record, in request order"
    )
    pctr: list[float] | None = Field(
        description="the click probability per record (kept for single-task clients); null "
        "when the model has no click output"
    )
    passthrough: list[dict[str, FeatureValue]] | None = Field(
        default=None, description="each record's pass-through columns, if the run has any"
    )
    model_version: str


class CreativeIn(_Strict):
    creative_id: str | int
    features: dict[str, FeatureValue] = Field(default_factory=dict)


class CandidateIn(_Strict):
    ad_id: str | int
    bid: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="bid per billing event: per click for cpc, per conversion for cpa and ocpc",
    )
    billing: Billing = Field(
        default="cpc",
        description="cpc: ranked on pCTR, pays per click; cpa: ranked on pCTCVR, pays per "
        "conversion; ocpc: bids per conversion, ranked on pCTCVR, pays per click",
    )
    features: dict[str, FeatureValue] = Field(default_factory=dict)
    creatives: list[CreativeIn] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _unique_creatives(self) -> CandidateIn:
        ids = [c.creative_id for c in self.creatives or ()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"ad {self.ad_id!r} lists a creative_id more than once")
        return self


class RankRequest(_Strict):
    context: dict[str, FeatureValue] = Field(default_factory=dict)
    candidates: list[CandidateIn] = Field(min_length=1)
    slots: int = Field(default=1, ge=1, le=MAX_SLOTS)
    reserve_price: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="legacy reserve per click, CPC-only requests (R_i = 1000 × r × pCTR_i)",
    )
    reserve_ecpm: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="reserve R per 1000 impressions: eligible iff score >= R",
    )

    @model_validator(mode="after")
    def _unique_ads(self) -> RankRequest:
        ids = [c.ad_id for c in self.candidates]
        if len(set(ids)) != len(ids):
            raise ValueError("candidates list an ad_id more than once")
        return self


class SlotOut(BaseModel):
    slot: int
    ad_id: str | int
    creative_id: str | int | None
    bid: float
    pctr: float
    ecpm: float = Field(description="the ranking score (same as score)")
    price: float = Field(description="price per billing_event")
    billing: Billing
    billing_event: Literal["click", "conversion"]
    q: float = Field(description="pCTR for cpc, pCTCVR for cpa and ocpc")
    score: float = Field(description="1000 × bid × q")
    pcvr: float | None = None
    pctcvr: float | None = None


class RankResponse(BaseModel):
    slots: list[SlotOut]
    model_version: str
    scored_pairs: int
    eligible_ads: int


class ReloadRequest(_Strict):
    run_dir: str | None = None
