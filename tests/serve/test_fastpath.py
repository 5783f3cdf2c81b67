"""The /v1/rank fast path accepts only what the pydantic request model accepts, with the
same values, and the service answers identically on both paths."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from adrank.serve.fastpath import RankInput, parse_rank_body
from adrank.serve.payloads import RankRequest

VALID: dict[str, Any] = {
    "context": {"user": "u1", "hour": 3, "score": 0.5, "flag": True, "none": None},
    "candidates": [
        {"ad_id": "a", "bid": 1.5, "features": {"item": "i1"}},
        {"ad_id": 7, "bid": 2, "billing": "cpa", "features": {"item": 3}},
        {
            "ad_id": "c",
            "bid": 0.25,
            "billing": "ocpc",
            "creatives": [{"creative_id": "x", "features": {"size": "s"}}, {"creative_id": 9}],
        },
        {"ad_id": "d", "bid": 1.0, "creatives": None},
    ],
    "slots": 3,
    "reserve_ecpm": 12.5,
    "request_id": "r-1",
}

# (path, replacement) mutations; each yields a body pydantic may or may not accept
MUTATIONS: list[tuple[tuple[Any, ...], Any]] = [
    (("slots",), 0),
    (("slots",), 101),
    (("slots",), 2.0),
    (("slots",), True),
    (("slots",), "3"),
    (("reserve_price",), -1),
    (("reserve_price",), 1e7),
    (("reserve_ecpm",), "1"),
    (("reserve_ecpm",), False),
    (("request_id",), ""),
    (("request_id",), "x" * 129),
    (("request_id",), 5),
    (("extra",), 1),
    (("context",), []),
    (("context",), {"seq": ["a", 2]}),
    (("context",), {"seq": [True]}),
    (("context",), {"nested": {"a": 1}}),
    (("candidates",), []),
    (("candidates",), {}),
    (("candidates", 0, "ad_id"), ""),
    (("candidates", 0, "ad_id"), -1),
    (("candidates", 0, "ad_id"), 2**53),
    (("candidates", 0, "ad_id"), 1.0),
    (("candidates", 0, "ad_id"), True),
    (("candidates", 0, "ad_id"), "7"),  # duplicates 7 as text
    (("candidates", 0, "bid"), -0.5),
    (("candidates", 0, "bid"), 1e6 + 1),
    (("candidates", 0, "bid"), "1.0"),
    (("candidates", 0, "bid"), None),
    (("candidates", 0, "billing"), "cpm"),
    (("candidates", 0, "features"), None),
    (("candidates", 0, "features"), {"item": [1, 2]}),
    (("candidates", 0, "features"), {"item": [1.5]}),
    (("candidates", 0, "color"), "red"),
    (("candidates", 2, "creatives"), []),
    (("candidates", 2, "creatives", 1, "creative_id"), "x"),
    (("candidates", 2, "creatives", 1, "creative_id"), None),
    (("candidates", 2, "creatives", 1, "extra"), 1),
    (("candidates", 2, "creatives", 0, "features"), {"a": {"b": 1}}),
]


def mutated(path: tuple[Any, ...], value: Any) -> bytes:
    body = json.loads(json.dumps(VALID))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(body).encode()


def as_plain(req: RankRequest | RankInput) -> dict[str, Any]:
    return {
        "context": req.context,
        "slots": req.slots,
        "reserve_price": req.reserve_price,
        "reserve_ecpm": req.reserve_ecpm,
        "request_id": req.request_id,
        "candidates": [
            (
                c.ad_id,
                type(c.ad_id).__name__,
                c.bid,
                type(c.bid).__name__,
                c.billing,
                dict(c.features),
                [(x.creative_id, dict(x.features)) for x in c.creatives or ()],
            )
            for c in req.candidates
        ],
    }


def test_a_valid_body_gives_the_values_pydantic_gives() -> None:
    body = json.dumps(VALID).encode()
    fast = parse_rank_body(body)
    assert fast is not None
    assert as_plain(fast) == as_plain(RankRequest.model_validate_json(body))


@pytest.mark.parametrize(("path", "value"), MUTATIONS)
def test_the_fast_path_never_accepts_what_pydantic_refuses(path: tuple, value: Any) -> None:
    body = mutated(path, value)
    fast = parse_rank_body(body)
    try:
        slow = RankRequest.model_validate_json(body)
    except ValidationError:
        assert fast is None  # FastAPI's handler answers with its located 422
        return
    if fast is not None:  # a value needing conversion may take the slow path; never differ
        assert as_plain(fast) == as_plain(slow)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'{"candidates": NaN}', b"\xff"])
def test_malformed_json_takes_the_slow_path(body: bytes) -> None:
    assert parse_rank_body(body) is None


def test_random_bodies_agree_with_pydantic() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        picks = rng.choice(len(MUTATIONS), size=int(rng.integers(0, 3)), replace=False)
        body = json.loads(json.dumps(VALID))
        for i in picks:
            path, value = MUTATIONS[int(i)]
            node = body
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue
        raw = json.dumps(body).encode()
        fast = parse_rank_body(raw)
        try:
            slow = RankRequest.model_validate_json(raw)
        except ValidationError:
            assert fast is None, raw
            continue
        if fast is not None:
            assert as_plain(fast) == as_plain(slow)
