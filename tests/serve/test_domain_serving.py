"""A multi-domain model served over real HTTP on 127.0.0.1: the domain comes in the
``/v1/rank`` context; an unknown or missing domain takes the fallback slot that domain
dropout trained (no error) and is counted in ``/metrics``. Synthetic data (generated here):
clicks whose rate depends on the item *and* the scenario."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.data.schema import CategoricalFeature, Schema
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor

SCENARIOS = ("feed", "search", "detail")
SCHEMA = Schema(
    labels=("click",),
    features=tuple(CategoricalFeature(c) for c in ("user", "item", "scenario")),
    roles={"domain": "scenario", "group": "user"},
    name="synthetic_scenarios",
)


def _frame(rows: int, seed: int) -> pl.DataFrame:
    """Synthetic: the item's effect flips sign between feed and search; detail is small."""
    rng = np.random.default_rng(seed)
    scenario = rng.choice(3, rows, p=[0.6, 0.3, 0.1])
    item = rng.integers(0, 20, rows)
    sign = np.array([1.0, -1.0, 0.5])[scenario]
    logit = sign * ((item % 5) - 2) * 0.9
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(
        {
            "click": click,
            "user": [f"u{x}" for x in rng.integers(0, 40, rows)],
            "item": [f"i{x}" for x in item],
            "scenario": [SCENARIOS[s] for s in scenario],
        }
    )


@pytest.fixture(scope="module", params=["star", "pepnet"])
def domain_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(f"domain-{request.param}")
    splits = {name: _frame(n, seed) for name, n, seed in
              (("train", 4000, 1), ("valid", 800, 2), ("test", 800, 3))}  # fmt: skip
    prepared = prepare_frames(SCHEMA, splits, root / "prepared")
    config = RunConfig(
        model=request.param,
        params={"embedding_dim": 4, "hidden_units": [16, 8], "domain_dropout": 0.2},
        train=TrainConfig(
            max_epochs=2, batch_size=256, learning_rate=3e-3, progress=False, seed=0,
            num_threads=1,
        ),
    )  # fmt: skip
    train_run(config, root / request.param, prepared=prepared)
    return root / request.param


@pytest.fixture(scope="module")
def server(domain_run: Path, server_class: Any) -> Iterator[Any]:
    from adrank.serve.app import create_app

    app = create_app(domain_run, torch_threads=None)
    with server_class(app) as live:
        yield live


ITEMS = [f"i{x}" for x in range(5)]


def _rank(url: str, context: dict[str, Any]) -> dict[str, float]:
    body = {
        "context": context,
        "candidates": [{"ad_id": i, "bid": 1.0, "features": {"item": i}} for i in ITEMS],
        "slots": len(ITEMS),
    }
    res = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert res.status_code == 200, res.text
    return {s["ad_id"]: s["pctr"] for s in res.json()["slots"]}


def _fallbacks(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    prefix = "adrank_domain_fallback_total{reason="
    return {
        line[len(prefix) + 1 : line.index('"}')]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def test_rank_routes_by_the_context_domain_and_counts_the_fallback(
    server: Any, domain_run: Path
) -> None:
    before = _fallbacks(server.url)
    feed = _rank(server.url, {"user": "u1", "scenario": "feed"})
    search = _rank(server.url, {"user": "u1", "scenario": "search"})
    assert _fallbacks(server.url) == before  # known domains take no fallback
    # the scenarios were learned apart: feed ranks i4 over i0, search the other way round
    assert feed["i4"] > feed["i0"] and search["i0"] > search["i4"]
    # each score is the model's for that record (the domain taken from the context)
    predictor = Predictor.load(domain_run)
    record = {"user": "u1", "item": "i4", "scenario": "search"}
    assert abs(predictor.predict_outputs([record])["pctr"][0] - search["i4"]) <= 1e-6

    unseen = _rank(server.url, {"user": "u1", "scenario": "never-seen-scenario"})
    # null: "unknown" (omitting a categorical field is a 422, as for every field)
    missing = _rank(server.url, {"user": "u1", "scenario": None})
    assert unseen == missing  # both are OOV: the fallback slot
    assert unseen != feed and unseen != search
    after = _fallbacks(server.url)
    assert after["unseen"] - before.get("unseen", 0) == len(ITEMS)
    assert after["missing"] - before.get("missing", 0) == len(ITEMS)
    # the fallback is the trained pooled path: the flipped scenarios roughly cancel there,
    # so it separates i4 from i0 less than the scenario it learned most from (feed)
    assert abs(unseen["i4"] - unseen["i0"]) < abs(feed["i4"] - feed["i0"])


def test_predict_counts_unknown_domains_too(server: Any) -> None:
    before = _fallbacks(server.url)
    body = {"records": [{"user": "u1", "item": "i1", "scenario": "nope"},
                        {"user": "u1", "item": "i1", "scenario": "feed"}]}  # fmt: skip
    res = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
    assert res.status_code == 200, res.text
    assert _fallbacks(server.url)["unseen"] - before.get("unseen", 0) == 1
