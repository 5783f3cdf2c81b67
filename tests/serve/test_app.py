"""The HTTP service, against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest

from adrank.serve.predictor import Predictor
from adrank.serve.ranking import AdCandidate, Creative, rank_ads

CONTEXT = {"user": "u3", "site": "s1", "price": 2.5, "age": 41, "hist": [1, 2, 4]}


def candidates(n: int, creatives: int = 2) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        ad = str(i % 30)
        out.append(
            {
                "ad_id": f"ad{i}",
                "bid": 0.5 + (i % 4) * 0.25,
                "features": {"ad": ad},
                "creatives": [
                    {"creative_id": f"ad{i}-c{c}", "features": {"creative": f"{ad}-{c}"}}
                    for c in range(creatives)
                ],
            }
        )
    return out


def rank_body(n: int = 10, **extra: Any) -> dict[str, Any]:
    return {"context": copy.deepcopy(CONTEXT), "candidates": candidates(n), "slots": 3, **extra}


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


def test_healthz_and_docs(client: httpx.Client, synthetic_runs) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "deepfm"
    assert health["backend"] == "torch"  # which runtime scores (torch, torchscript, onnx)
    assert health["model_version"] == Predictor.load(synthetic_runs.run_a).version
    assert health["required_fields"] == ["user", "ad", "creative", "site"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/rank", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "/admin/reload" not in spec["paths"]  # no admin token configured
    assert "RankRequest" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_fast_and_the_validated_path_answer_alike(client: httpx.Client) -> None:
    from adrank.serve.fastpath import parse_rank_body

    fast = rank_body(12, request_id="same", reserve_ecpm=1.0)
    slow = {**fast, "slots": 3.0}  # pydantic makes it 3; the fast path declines it
    assert parse_rank_body(json.dumps(fast).encode()) is not None
    assert parse_rank_body(json.dumps(slow).encode()) is None
    a, b = client.post("/v1/rank", json=fast), client.post("/v1/rank", json=slow)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json() and len(a.json()["slots"]) == 3


def test_predict_matches_the_predictor(client: httpx.Client, synthetic_runs) -> None:
    records = synthetic_runs.raw_test.drop("click").head(7).to_dicts()
    res = client.post("/v1/predict", json={"records": records})
    assert res.status_code == 200, res.text
    expected = Predictor.load(synthetic_runs.run_a).predict(records)
    body = res.json()
    np.testing.assert_array_equal(np.array(body["pctr"]), expected)  # single-task clients
    assert body["outputs"] == ["pctr"] and body["passthrough"] is None
    assert body["predictions"] == [{"pctr": p} for p in expected.tolist()]


@pytest.mark.parametrize("billing", ["cpa", "ocpc"])
def test_conversion_bids_on_a_click_model_answer_422(client: httpx.Client, billing: str) -> None:
    body = rank_body(4)
    body["candidates"][2]["billing"] = billing
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert loc_of(res) == [["body", "candidates", 2, "billing"]]
    msg = res.json()["detail"][0]["msg"]
    assert f"candidate 2 (ad_id 'ad2') bids {billing}" in msg
    assert "'pctcvr'" in msg and "this model gives ['pctr']" in msg
    body["candidates"][2]["billing"] = "cpc"  # explicit cpc is the default
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 200
    assert {s["billing"] for s in res.json()["slots"]} == {"cpc"}


def test_rank_matches_in_process_auction(client: httpx.Client, synthetic_runs) -> None:
    body = rank_body(12, reserve_price=0.6)
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["scored_pairs"] == 24
    predictor = Predictor.load(synthetic_runs.run_a)
    ads = [
        AdCandidate(
            c["ad_id"],
            c["bid"],
            c["features"],
            tuple(Creative(x["creative_id"], x["features"]) for x in c["creatives"]),
        )
        for c in body["candidates"]
    ]
    expected = rank_ads(predictor.predict, CONTEXT, ads, slots=3, reserve_price=0.6)
    assert out["eligible_ads"] == expected.eligible_ads == 9  # bids of 0.5 are below reserve
    assert out["slots"] == [vars(s) for s in expected.slots]
    assert [s["slot"] for s in out["slots"]] == [1, 2, 3]
    for s in out["slots"]:
        assert s["ecpm"] == s["score"] == pytest.approx(s["bid"] * s["pctr"] * 1000)
        assert (s["billing"], s["billing_event"], s["q"]) == ("cpc", "click", s["pctr"])
        assert s["pcvr"] is None and s["pctcvr"] is None
        assert 0.6 <= s["price"] <= s["bid"]
        assert s["creative_id"].startswith(s["ad_id"] + "-")


def loc_of(res: httpx.Response) -> list[list[Any]]:
    return [d["loc"] for d in res.json()["detail"]]


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda b: b["candidates"][1].pop("bid"), ["body", "candidates", 1, "bid"]),
        (lambda b: b["candidates"][0].update(bid=-1), ["body", "candidates", 0, "bid"]),
        (lambda b: b.update(slots=0), ["body", "slots"]),
        (lambda b: b.update(slot=2), ["body", "slot"]),
        (lambda b: b.update(reserve_price="high"), ["body", "reserve_price"]),
        (lambda b: b.update(candidates=[]), ["body", "candidates"]),
        (
            lambda b: b["candidates"][2]["features"].update(usr="u1"),
            ["body", "candidates", 2, "features", "usr"],
        ),
        (
            lambda b: b["candidates"][1]["creatives"][1]["features"].update(creative=1.5),
            ["body", "candidates", 1, "creatives", 1, "features", "creative"],
        ),
        (lambda b: b["context"].update(user=True), ["body", "context", "user"]),
        (lambda b: b["context"].pop("site"), ["body", "candidates", 0, "features", "site"]),
        (
            lambda b: b["candidates"].append(b["candidates"][0]),
            ["body", "candidates", 4, "ad_id"],
        ),
    ],
)
def test_bad_rank_payloads_answer_422_naming_the_field(
    client: httpx.Client, mutate: Any, loc: list[Any]
) -> None:
    body = rank_body(4)
    mutate(body)
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert loc in loc_of(res), res.json()
    if loc[-1] in ("usr", "creative", "user", "site"):
        assert repr(loc[-1]) in res.json()["detail"][0]["msg"]


def test_bad_predict_payloads(client: httpx.Client) -> None:
    res = client.post("/v1/predict", json={"records": [{"user": "u1"}]})
    assert res.status_code == 422 and "'ad'" in res.json()["detail"][0]["msg"]
    assert loc_of(res) == [["body", "records", 0, "ad"]]
    res = client.post(
        "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert res.status_code == 422
    res = client.post("/v1/predict", json={"records": [{"user": "u1"}] * 201})
    assert res.status_code == 422 and "at most 200 records" in res.text


def test_limits_on_candidates_and_body_size(client: httpx.Client) -> None:
    res = client.post("/v1/rank", json=rank_body(51, slots=1) | {"slots": 1})
    assert res.status_code == 422
    assert loc_of(res) == [["body", "candidates"]] and "at most 50 candidates" in res.text
    big = json.dumps(rank_body(10) | {"context": {**CONTEXT, "hist": ["1"] * 20_000}})
    assert len(big) > 64 * 1024
    res = client.post("/v1/rank", content=big, headers={"content-type": "application/json"})
    assert res.status_code == 413 and "65536 bytes" in res.text

    def chunks():  # no Content-Length: the limit is enforced while reading
        data = big.encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    res = client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    assert client.get("/healthz").status_code == 200  # the server is fine afterwards


def test_metrics_prometheus_text(client: httpx.Client) -> None:
    client.post("/v1/rank", json=rank_body(3))
    client.get("/no/such/path")
    text = client.get("/metrics").text
    lines = text.splitlines()
    assert "# TYPE adrank_http_requests_total counter" in lines
    counts = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("adrank_http_requests_total{")
    }
    assert counts['adrank_http_requests_total{method="POST",path="/v1/rank",status="200"}'] >= 1
    assert counts['adrank_http_requests_total{method="POST",path="/v1/rank",status="422"}'] >= 1
    assert counts['adrank_http_requests_total{method="POST",path="/v1/rank",status="413"}'] >= 1
    assert counts['adrank_http_requests_total{method="GET",path="other",status="404"}'] == 1
    assert "# TYPE adrank_http_request_duration_seconds histogram" in lines
    inf = [
        ln
        for ln in lines
        if ln.startswith('adrank_http_request_duration_seconds_bucket{path="/v1/rank",le="+Inf"}')
    ]
    count = [
        ln
        for ln in lines
        if ln.startswith('adrank_http_request_duration_seconds_count{path="/v1/rank"}')
    ]
    assert inf[0].split()[-1] == count[0].split()[-1]
    info = next(ln for ln in lines if ln.startswith("adrank_model_info{"))
    assert 'model="deepfm"' in info and 'version="deepfm-' in info and info.endswith(" 1")
    assert 'backend="torch"' in info


def test_reload_under_concurrent_requests(synthetic_runs, server_class) -> None:
    from adrank.serve.app import create_app

    token = "test-admin-token-0123456789"
    app = create_app(synthetic_runs.run_a, torch_threads=None, admin_token=token)
    version_a = Predictor.load(synthetic_runs.run_a).version
    version_b = Predictor.load(synthetic_runs.run_b).version
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                res = c.post("/v1/rank", json=rank_body(20))
                version = res.json().get("model_version", "") if res.status_code == 200 else ""
                with lock:
                    results.append((res.status_code, version))

    auth = {"Authorization": f"Bearer {token}"}
    with (
        server_class(app) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=auth) as admin,
    ):
        threads = [threading.Thread(target=hammer, args=(server.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        # the root is run_a's parent; references are relative to it
        res = admin.post("/admin/reload", json={"model": "run_b"})
        assert res.status_code == 200, res.text
        assert res.json()["previous_version"] == version_a
        assert res.json()["model_version"] == version_b
        bad = admin.post("/admin/reload", json={"model": "run_b/nope"})
        assert bad.status_code == 409 and f"still serving {version_b}" in bad.text
        outside = admin.post("/admin/reload", json={"run_dir": str(synthetic_runs.run_b)})
        assert outside.status_code == 403 and "absolute" in outside.text
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        health = admin.get("/healthz").json()
        assert health["model_version"] == version_b
        assert health["run_dir"] == str(synthetic_runs.run_b)
        text = admin.get("/metrics").text
        assert "adrank_model_reloads_total 1" in text
        assert "adrank_model_reloads_refused_total 2" in text
        assert admin.post("/admin/reload").json()["model_version"] == version_b  # same dir
    statuses = {s for s, _ in results}
    assert statuses == {200}, statuses
    versions = [v for _, v in results]
    assert set(versions) == {version_a, version_b}
    # once the new version is served, the old one never comes back
    first_b = versions.index(version_b)
    assert version_a not in versions[first_b + len(threads) :]
