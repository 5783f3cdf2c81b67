"""Serving a click/conversion (multi-task) run: named outputs, the down-sampling correction,
pass-through metadata, calibration per output, and a mixed CPC/CPA/oCPC auction over real
HTTP on 127.0.0.1.

The run is a small ESMM trained on a synthetic funnel (tasks ``click`` and ``conversion``
given click) with negative down-sampling at rate 0.5.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema, Task
from adrank.pipeline import train_run
from adrank.serve.calibration import apply_calibration, calibrate
from adrank.serve.predictor import Predictor, predict_file
from adrank.serve.ranking import AdCandidate, Creative, rank_ads

SAMPLING_RATE = 0.5

FUNNEL_SCHEMA = Schema(
    tasks=(Task("click", "click"), Task("conversion", "conv", given="click")),
    roles={"passthrough": ["request_id"]},
    features=(
        CategoricalFeature("user"),
        CategoricalFeature("ad"),
        NumericFeature("price", normalizer="standard", fill_value=1.0),
    ),
    name="synthetic_funnel",
)


def funnel_frame(rows: int, seed: int) -> pl.DataFrame:
    """Clicks driven by the ad and the price; conversions (given a click) by the ad."""
    rng = np.random.default_rng(seed)
    ad = rng.integers(0, 20, rows)
    price = rng.gamma(2.0, 2.0, rows)
    click = rng.random(rows) < 1 / (1 + np.exp(-((ad % 5 - 2) * 0.8 - 0.1 * price)))
    conv = click & (rng.random(rows) < 1 / (1 + np.exp(-((ad % 3 - 1) * 1.2))))
    return pl.DataFrame(
        {
            "click": click.astype(np.int64),
            "conv": conv.astype(np.int64),
            "user": [f"u{x}" for x in rng.integers(0, 30, rows)],
            "ad": [str(x) for x in ad],
            "price": price,
            "request_id": [f"req-{seed}-{i}" for i in range(rows)],
        }
    )


@dataclass
class FunnelRun:
    run_dir: Path
    raw_test: pl.DataFrame
    raw_valid: pl.DataFrame


@pytest.fixture(scope="module")
def funnel_run(tmp_path_factory: pytest.TempPathFactory) -> FunnelRun:
    root = tmp_path_factory.mktemp("funnel")
    splits = {
        "train": funnel_frame(6000, 11),
        "valid": funnel_frame(2000, 12),
        "test": funnel_frame(1500, 13),
    }
    prepared = prepare_frames(FUNNEL_SCHEMA, splits, root / "prepared")
    config = RunConfig(
        model="esmm",
        params={
            "embedding_dim": 4,
            "tower_hidden_units": [16],
            "net_dropout": 0.0,
            "batch_norm": False,
        },
        train=TrainConfig(
            max_epochs=2,
            batch_size=256,
            learning_rate=1e-2,
            progress=False,
            seed=3,
            negative_sampling_rate=SAMPLING_RATE,
            num_threads=1,
        ),
    )
    train_run(config, root / "run", prepared=prepared)
    return FunnelRun(root / "run", splits["test"], splits["valid"])


@pytest.fixture(scope="module")
def predictor(funnel_run: FunnelRun) -> Predictor:
    return Predictor.load(funnel_run.run_dir)


def features_of(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("click", "conv")


def test_every_output_by_name(funnel_run: FunnelRun, predictor: Predictor) -> None:
    assert predictor.model_outputs == ["pctr", "pcvr"]
    assert predictor.outputs == ["pctr", "pcvr", "pctcvr"]
    frame = features_of(funnel_run.raw_test)
    probs = predictor.predict_outputs(frame)
    assert set(probs) == {"pctr", "pcvr", "pctcvr"}
    np.testing.assert_array_equal(probs["pctcvr"], probs["pctr"] * probs["pcvr"])
    # predict(): the model's own outputs, as the trainer saved them (corrected for sampling)
    stacked = predictor.predict(frame)
    expected = np.load(funnel_run.run_dir / "test_predictions.npy")
    assert stacked.shape == expected.shape == (1500, 2)
    assert np.max(np.abs(stacked - expected)) <= 1e-6
    records = frame.head(300).to_dicts()  # the record fast path gives the same numbers
    fast = predictor.predict_outputs(records)
    for name in predictor.outputs:
        np.testing.assert_allclose(fast[name], probs[name][:300], rtol=0, atol=1e-12)


def test_negative_sampling_correction_applies_to_pctr_only(
    funnel_run: FunnelRun, predictor: Predictor
) -> None:
    frame = features_of(funnel_run.raw_test)
    raw = torch.sigmoid(predictor.predict_logits(predictor.encode(frame))).double().numpy()
    probs = predictor.predict_outputs(frame)
    q = raw[:, 0]
    np.testing.assert_allclose(probs["pctr"], q / (q + (1 - q) / SAMPLING_RATE), rtol=1e-12)
    np.testing.assert_array_equal(probs["pcvr"], raw[:, 1])  # every clicked row was kept
    assert np.all(probs["pctr"] < q)


def test_passthrough_reaches_prediction_output_and_never_the_model(
    funnel_run: FunnelRun, predictor: Predictor, tmp_path: Path
) -> None:
    assert predictor.passthrough == ("request_id",)
    assert "request_id" not in predictor.feature_map.names
    frame = features_of(funnel_run.raw_test).head(40)
    source = tmp_path / "in.csv"
    frame.write_csv(source)
    rows, _ = predict_file(funnel_run.run_dir, source, tmp_path / "out.csv")
    out = pl.read_csv(tmp_path / "out.csv")
    assert rows == 40
    assert out["request_id"].to_list() == frame["request_id"].to_list()
    probs = predictor.predict_outputs(frame)
    for name in ("pctr", "pcvr", "pctcvr"):
        np.testing.assert_allclose(out[name].to_numpy(), probs[name], rtol=1e-12)
    # a record may carry its request id; the scores do not depend on it
    records = frame.head(2).to_dicts()
    renamed = [{**r, "request_id": "other"} for r in records]
    np.testing.assert_array_equal(predictor.predict(records), predictor.predict(renamed))


def test_calibration_per_output(funnel_run: FunnelRun, tmp_path: Path) -> None:
    run = Path(shutil.copytree(funnel_run.run_dir, tmp_path / "run"))
    raw = Predictor.load(run)
    report = calibrate(run, "isotonic")
    valid = funnel_run.raw_valid
    clicks = int(valid["click"].sum())
    assert report.rows == 2000
    assert report.fitted_rows == {"pctr": 2000, "pcvr": clicks}  # pcvr: clicked rows only
    assert report.derived == ["pctcvr"]
    assert set(report.splits) == {
        f"{split}/{name}" for split in ("valid", "test") for name in ("pctr", "pcvr", "pctcvr")
    }
    assert report.splits["valid/pcvr"]["before"]["rows"] == clicks
    assert report.splits["valid/pctcvr"]["before"]["rows"] == 2000
    for name in ("pctr", "pcvr"):  # isotonic matches the mean on the rows it was fitted on
        assert report.splits[f"valid/{name}"]["after"]["ratio"] == pytest.approx(1.0, abs=1e-3)
    mean_obs = float((valid["click"] * valid["conv"]).mean())
    assert report.splits["valid/pctcvr"]["after"]["mean_obs"] == pytest.approx(mean_obs)
    calibrated = Predictor.load(run)
    stored = calibrated.calibration
    assert stored is not None and stored["version"] == 2 and set(stored["maps"]) == {"pctr", "pcvr"}
    records = features_of(funnel_run.raw_test).head(50).to_dicts()
    before, after = raw.predict_outputs(records), calibrated.predict_outputs(records)
    for name in ("pctr", "pcvr"):
        single = {**stored, "outputs": [name]}
        np.testing.assert_allclose(after[name], apply_calibration(single, before[name]))
    np.testing.assert_array_equal(after["pctcvr"], after["pctr"] * after["pcvr"])


def test_exported_backend_gives_the_same_named_outputs(
    funnel_run: FunnelRun, predictor: Predictor, tmp_path: Path
) -> None:
    from adrank.serve.export import export

    run = Path(shutil.copytree(funnel_run.run_dir, tmp_path / "run"))
    export(run, "torchscript")
    traced = Predictor.load(run, backend="torchscript")
    records = features_of(funnel_run.raw_test).head(64).to_dicts()
    eager, exported = predictor.predict_outputs(records), traced.predict_outputs(records)
    assert list(exported) == ["pctr", "pcvr", "pctcvr"]
    for name in eager:
        np.testing.assert_allclose(exported[name], eager[name], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- HTTP ----
@pytest.fixture(scope="module")
def client(funnel_run: FunnelRun, server_class) -> Iterator[httpx.Client]:
    from adrank.serve.app import create_app

    app = create_app(funnel_run.run_dir, torch_threads=None)
    with server_class(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


CONTEXT = {"user": "u4", "price": 2.0}


def mixed_candidates() -> list[dict[str, Any]]:
    """Eight ads (ad ids 0..19 in the data), every billing type, some with creatives."""
    out = []
    for i in range(8):
        billing = ("cpc", "cpa", "ocpc")[i % 3]
        bid = 0.4 + 0.1 * i if billing == "cpc" else 3.0 + i
        cand: dict[str, Any] = {"ad_id": f"ad{i}", "bid": bid, "billing": billing}
        if i % 2:
            cand["creatives"] = [
                {"creative_id": f"ad{i}-{c}", "features": {"ad": str((i + 7 * c) % 20)}}
                for c in range(2)
            ]
        else:
            cand["features"] = {"ad": str(i)}
        out.append(cand)
    return out


def test_predict_answers_named_probabilities(
    client: httpx.Client, funnel_run: FunnelRun, predictor: Predictor
) -> None:
    records = features_of(funnel_run.raw_test).head(5).to_dicts()
    res = client.post("/v1/predict", json={"records": records})
    assert res.status_code == 200, res.text
    body = res.json()
    expected = predictor.predict_outputs(records)
    assert body["outputs"] == ["pctr", "pcvr", "pctcvr"]
    assert len(body["predictions"]) == 5
    for i, row in enumerate(body["predictions"]):
        assert row == {name: float(expected[name][i]) for name in body["outputs"]}
    assert body["pctr"] == expected["pctr"].tolist()
    assert body["passthrough"] == [{"request_id": r["request_id"]} for r in records]
    health = client.get("/healthz").json()
    assert health["outputs"] == ["pctr", "pcvr", "pctcvr"]


def expected_slots(predictor: Predictor, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The auction recomputed from the Predictor's scores and the formulas (not the code
    under test): each ad's best creative by its q, s = 1000 bid q, ties by ad_id, prices
    per billing event."""
    reserve = body.get("reserve_ecpm", 0.0)
    options = [
        c.get("creatives") or [{"creative_id": None, "features": {}}] for c in body["candidates"]
    ]
    records = [
        {**body["context"], **cand.get("features", {}), **c["features"]}
        for cand, opts in zip(body["candidates"], options, strict=True)
        for c in opts
    ]
    scores = predictor.predict_outputs(records)  # one batch, as the server scores them
    ads, start = [], 0
    for cand, opts in zip(body["candidates"], options, strict=True):
        p = {name: v[start : start + len(opts)] for name, v in scores.items()}
        start += len(opts)
        key = "pctr" if cand["billing"] == "cpc" else "pctcvr"
        best = int(np.argmax(p[key]))
        pctr, pcvr, pctcvr = (float(p[n][best]) for n in ("pctr", "pcvr", "pctcvr"))
        q = pctr if cand["billing"] == "cpc" else pctcvr
        ads.append((cand, opts[best]["creative_id"], pctr, pcvr, pctcvr, q, cand["bid"] * q * 1e3))
    eligible = sorted(
        (a for a in ads if a[5] > 0 and a[6] >= reserve), key=lambda a: (-a[6], a[0]["ad_id"])
    )
    out = []
    for i, (cand, creative, pctr, pcvr, _pctcvr, q, s) in enumerate(eligible[: body["slots"]]):
        s_next = eligible[i + 1][6] if i + 1 < len(eligible) else 0.0
        if cand["billing"] == "ocpc":
            price = min(cand["bid"] * pcvr, max(s_next, reserve) / (1000 * pctr))
        else:
            price = min(cand["bid"], max(s_next, reserve) / (1000 * q))
        event = "conversion" if cand["billing"] == "cpa" else "click"
        out.append({"ad_id": cand["ad_id"], "creative_id": creative, "billing": cand["billing"],
                    "billing_event": event, "q": q, "score": s, "price": price})  # fmt: skip
    return out


@pytest.mark.parametrize("reserve_ecpm", [0.0, 30.0])
def test_rank_mixed_billing_over_http(
    client: httpx.Client, predictor: Predictor, reserve_ecpm: float
) -> None:
    body = {
        "context": CONTEXT,
        "candidates": mixed_candidates(),
        "slots": 4,
        "reserve_ecpm": reserve_ecpm,
    }
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["scored_pairs"] == 12
    slots = out["slots"]
    assert {s["billing"] for s in slots} >= {"cpa", "ocpc"} or reserve_ecpm > 0
    want = expected_slots(predictor, body)
    assert len(slots) == len(want) >= 2
    for got, exp in zip(slots, want, strict=True):
        for key in ("ad_id", "creative_id", "billing", "billing_event"):
            assert got[key] == exp[key]
        for key in ("q", "score", "price"):
            assert got[key] == pytest.approx(exp[key], rel=1e-12), (key, got, exp)
        assert got["ecpm"] == got["score"]
        assert got["pctcvr"] == pytest.approx(got["pctr"] * got["pcvr"], rel=1e-12)
    # the in-process auction over the same Predictor gives the same response
    ads = [
        AdCandidate(
            c["ad_id"],
            c["bid"],
            c.get("features", {}),
            tuple(Creative(x["creative_id"], x["features"]) for x in c.get("creatives", ())),
            c["billing"],
        )
        for c in body["candidates"]
    ]
    local = rank_ads(predictor.predict_outputs, CONTEXT, ads, 4, reserve_ecpm=reserve_ecpm)
    assert slots == [vars(s) for s in local.slots]
    assert out["eligible_ads"] == local.eligible_ads


def loc_and_msg(res: httpx.Response) -> tuple[list[Any], str]:
    detail = res.json()["detail"][0]
    return detail["loc"], detail["msg"]


def test_rank_request_errors_name_the_field(client: httpx.Client) -> None:
    body = {"context": CONTEXT, "candidates": mixed_candidates(), "slots": 2}
    res = client.post("/v1/rank", json={**body, "reserve_price": 0.5})
    assert res.status_code == 422
    loc, msg = loc_and_msg(res)
    assert loc == ["body", "reserve_price"] and "candidate 1 (ad_id 'ad1') bids cpa" in msg
    cpc_only = [c | {"billing": "cpc"} for c in body["candidates"]]
    res = client.post(
        "/v1/rank", json={**body, "candidates": cpc_only, "reserve_price": 0.5, "reserve_ecpm": 9}
    )
    assert res.status_code == 422 and "not both" in loc_and_msg(res)[1]
    legacy = client.post("/v1/rank", json={**body, "candidates": cpc_only, "reserve_price": 0.5})
    assert legacy.status_code == 200 and all(s["price"] >= 0.5 for s in legacy.json()["slots"])
    bad = copy.deepcopy(body)
    bad["candidates"][3]["billing"] = "cpm"
    res = client.post("/v1/rank", json=bad)
    assert res.status_code == 422 and loc_and_msg(res)[0] == ["body", "candidates", 3, "billing"]
    res = client.post("/v1/rank", json={**body, "reserve_ecpm": -1})
    assert res.status_code == 422 and loc_and_msg(res)[0] == ["body", "reserve_ecpm"]


def test_calibrate_command_table_per_output(funnel_run: FunnelRun, tmp_path: Path) -> None:
    from rich.console import Console

    from adrank.serve.cli_commands import run_calibrate

    run = Path(shutil.copytree(funnel_run.run_dir, tmp_path / "run"))
    console = Console(width=200, record=True)
    console.print(run_calibrate(run, "platt"))
    text = console.export_text()
    clicks = int(funnel_run.raw_valid["click"].sum())
    assert f"pctr on 2,000, pcvr on {clicks:,}" in text
    assert "valid/pctcvr (derived)" in text and "test/pcvr" in text


@pytest.mark.integration
def test_esmm_on_frappe_funnel_ranks_mixed_billing_over_http(
    data_dir: Path, cache_dir: Path, tmp_path: Path, server_class
) -> None:
    """A served ESMM run on the real ``frappe_funnel`` (one epoch) answers /v1/rank with CPC,
    CPA and oCPC candidates."""
    from adrank.data.datasets import get_dataset
    from adrank.data.prepare import prepare_dataset
    from adrank.serve.app import create_app

    prepared = prepare_dataset("frappe_funnel", data_dir=data_dir, cache_dir=cache_dir)
    config = RunConfig(
        model="esmm",
        dataset="frappe_funnel",
        params={"embedding_dim": 8, "tower_hidden_units": [64], "net_dropout": 0.0},
        train=TrainConfig(max_epochs=1, progress=False, seed=1, num_threads=1),
    )
    train_run(config, tmp_path / "esmm", prepared=prepared)
    raw = get_dataset("frappe_funnel").build_splits(data_dir)["test"]
    rows = raw.drop(*prepared.feature_map.labels).head(200).to_dicts()
    ad_fields = ("item", "cost")
    context = {k: v for k, v in rows[0].items() if k not in ad_fields}
    candidates = [
        {
            "ad_id": f"ad{i}",
            "billing": ("cpc", "cpa", "ocpc")[i % 3],
            "bid": 0.5 if i % 3 == 0 else 5.0,
            "features": {k: rows[10 * i + 1][k] for k in ad_fields},
        }
        for i in range(12)
    ]
    body = {"context": context, "candidates": candidates, "slots": 12}
    app = create_app(tmp_path / "esmm", torch_threads=None)
    with server_class(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        res = client.post("/v1/rank", json=body)
        assert res.status_code == 200, res.text
        slots = res.json()["slots"]
        assert {s["billing"] for s in slots} == {"cpc", "cpa", "ocpc"}
        want = expected_slots(Predictor.load(tmp_path / "esmm"), body)
        assert [s["ad_id"] for s in slots] == [w["ad_id"] for w in want]
        for got, exp in zip(slots, want, strict=True):
            assert got["price"] == pytest.approx(exp["price"], rel=1e-12)
            assert got["pctcvr"] == pytest.approx(got["pctr"] * got["pcvr"], rel=1e-12)
        predict = client.post("/v1/predict", json={"records": rows[:3]}).json()
        assert predict["outputs"] == ["pctr", "pcvr", "pctcvr"]
