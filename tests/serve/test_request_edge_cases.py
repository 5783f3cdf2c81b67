"""Bad requests to the HTTP service that once crashed or were silently converted, against a
real uvicorn server.

* Strings that are not valid Unicode: JSON may spell an unpaired UTF-16 surrogate
  (``"\\ud800"``), which Python decodes into a ``str`` that no UTF-8 encoder accepts. As an
  ``ad_id``, a ``request_id``, a feature name or a model reference it used to answer 500
  (the response could not be encoded); it is now a 422 naming the field.
* A history list is strings and integers: ``[true]`` used to become the item ``1`` and
  ``[1.0]`` the item ``1`` (pydantic's lax conversion), and an item holding the schema's
  delimiter (``"1|2"``) used to be split into two items. Each is now a 422 naming it.
* The per-request limit on scored (ad, creative) pairs of ``/v1/rank`` named a
  ``records`` field that a rank request does not have; it now names ``candidates``.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from adrank.serve.model_root import BadModelReference, ModelRoot
from adrank.serve.predictor import Predictor, RecordError
from tests.serve.test_money_fields import body as rank_body
from tests.serve.test_money_fields import strict_json

RECORD = {"user": "u1", "ad": "3", "creative": "3-1", "site": "s1"}
SURROGATE = "\ud800"  # json.dumps writes it as the escape \ud800, as a buggy client would
TOKEN = "audit-admin-token-0123456789"


def post(
    conn: http.client.HTTPConnection, path: str, payload: Any, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=json.dumps(payload).encode(), headers=headers)
    res = conn.getresponse()
    data = res.read()
    assert not res.will_close, "the server closed the keep-alive connection"
    return res.status, strict_json(data)


def locs(reply: dict[str, Any]) -> list[list[Any]]:
    return [e["loc"] for e in reply["detail"]]


# ------------------------------------------------------- strings that are not Unicode -----
def _set(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _with_key(body: dict[str, Any], path: list[Any], key: str) -> dict[str, Any]:
    target = body
    for step in path:
        target = target[step]
    target[key] = 1
    return body


RANK_TEXT_CASES = [
    ("ad_id", _set(rank_body(), ["candidates", 1, "ad_id"], SURROGATE),
     ["body", "candidates", 1, "ad_id"]),
    ("creative_id", _set(rank_body(), ["candidates", 0, "creatives"],
                         [{"creative_id": "ok"}, {"creative_id": "c" + SURROGATE}]),
     ["body", "candidates", 0, "creatives", 1, "creative_id"]),
    ("request_id", _set(rank_body(), ["request_id"], SURROGATE),
     ["body", "request_id"]),
    ("context key", _with_key(rank_body(), ["context"], SURROGATE),
     ["body", "context", SURROGATE.encode("utf-8", "backslashreplace").decode()]),
    ("feature value", _set(rank_body(), ["candidates", 2, "features", "ad"], SURROGATE),
     ["body", "candidates", 2, "features", "ad"]),
    ("history item", _set(rank_body(), ["context", "hist"], ["1", SURROGATE]),
     ["body", "context", "hist"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "loc"), [c[1:] for c in RANK_TEXT_CASES], ids=[c[0] for c in RANK_TEXT_CASES]
)
def test_rank_strings_that_are_not_unicode_are_422(
    conn: http.client.HTTPConnection, body: dict[str, Any], loc: list[Any]
) -> None:
    status, reply = post(conn, "/v1/rank", body)
    assert status == 422, reply
    assert loc in locs(reply), reply
    assert any("not valid Unicode" in e["msg"] for e in reply["detail"]), reply
    status, ok = post(conn, "/v1/rank", rank_body())  # the same connection still serves
    assert status == 200 and len(ok["slots"]) == 2


def test_an_error_body_echoing_such_a_string_stays_json(conn: http.client.HTTPConnection) -> None:
    body = rank_body()
    body["unknown"] = {"user": SURROGATE}  # an unknown field: pydantic echoes its value
    status, reply = post(conn, "/v1/rank", body)
    assert status == 422 and reply["detail"][0]["type"] == "extra_forbidden", reply
    assert reply["detail"][0]["input"] == {"user": "\\ud800"}


def test_predict_strings_that_are_not_unicode_are_422(conn: http.client.HTTPConnection) -> None:
    status, reply = post(conn, "/v1/predict", {"records": [RECORD, {**RECORD, SURROGATE: 1}]})
    assert status == 422, reply
    assert locs(reply) == [["body", "records", 1, "\\ud800"]]
    status, reply = post(conn, "/v1/predict", {"records": [{**RECORD, "user": SURROGATE}]})
    assert status == 422 and locs(reply) == [["body", "records", 0, "user"]], reply
    assert "not valid Unicode" in reply["detail"][0]["msg"]
    status, reply = post(conn, "/v1/predict", {"records": [RECORD]})
    assert status == 200 and 0 < reply["pctr"][0] < 1


def test_a_model_reference_that_is_not_unicode_is_422(
    synthetic_runs, server_class, tmp_path: Path
) -> None:
    from adrank.serve.app import create_app

    root = ModelRoot(synthetic_runs.run_a.parent)
    with pytest.raises(BadModelReference, match="not valid Unicode"):
        root.resolve("run_a" + SURROGATE)
    app = create_app(synthetic_runs.run_a, admin_token=TOKEN, torch_threads=None)
    with server_class(app) as live:
        url = urlsplit(live.url)
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            status, reply = post(c, "/admin/reload", {"model": SURROGATE}, token=TOKEN)
            assert status == 422, reply
            assert locs(reply) == [["body", "model"]]
            status, reply = post(c, "/admin/reload", {"model": "run_a"}, token=TOKEN)
            assert status == 200, reply
        finally:
            c.close()


# ----------------------------------------------------------------- history lists -----
@pytest.mark.parametrize(
    ("where", "items"),
    [
        (["context", "hist"], [True, False]),
        (["context", "hist"], [1, 2.0]),
        (["candidates", 0, "features", "hist"], ["3", True]),
    ],
)
def test_history_lists_hold_only_strings_and_integers(
    conn: http.client.HTTPConnection, where: list[Any], items: list[Any]
) -> None:
    status, reply = post(conn, "/v1/rank", _set(rank_body(), where, items))
    assert status == 422, reply
    assert all(loc[: len(where) + 1] == ["body", *where] for loc in locs(reply)), reply
    status, reply = post(conn, "/v1/predict", {"records": [{**RECORD, "hist": items}]})
    assert status == 422, reply
    assert all(loc[:4] == ["body", "records", 0, "hist"] for loc in locs(reply)), reply


def test_history_items_holding_the_delimiter_are_refused(
    conn: http.client.HTTPConnection, synthetic_runs
) -> None:
    predictor = Predictor.load(synthetic_runs.run_a)
    with pytest.raises(RecordError, match=r"item 0 \('1\|2'\) holds the delimiter") as err:
        predictor.predict_outputs([{**RECORD, "hist": ["1|2", "3"]}])
    assert err.value.field == "hist" and err.value.index == 0
    # the same ids as separate items, or as one delimited string, are fine
    split = predictor.predict_outputs([{**RECORD, "hist": ["1", "2", "3"]}])["pctr"]
    joined = predictor.predict_outputs([{**RECORD, "hist": "1|2|3"}])["pctr"]
    assert split.tolist() == joined.tolist()
    status, reply = post(conn, "/v1/rank", _set(rank_body(), ["context", "hist"], ["1|2", "3"]))
    assert status == 422, reply
    assert locs(reply) == [["body", "context", "hist"]]
    assert "delimiter" in reply["detail"][0]["msg"]
    body = _set(rank_body(), ["candidates", 1, "features", "hist"], ["4", "5|6"])
    status, reply = post(conn, "/v1/rank", body)
    assert status == 422 and locs(reply) == [["body", "candidates", 1, "features", "hist"]]


# ------------------------------------------------------------------ the pair limit -----
def test_too_many_scored_pairs_names_the_candidates(conn: http.client.HTTPConnection) -> None:
    body = rank_body(2)  # the live server allows 200 scored pairs per request
    body["candidates"][0]["creatives"] = [{"creative_id": f"c{j}"} for j in range(150)]
    body["candidates"][1]["creatives"] = [{"creative_id": f"c{j}"} for j in range(60)]
    status, reply = post(conn, "/v1/rank", body)
    assert status == 422, reply
    assert locs(reply) == [["body", "candidates"]]
    msg = reply["detail"][0]["msg"]
    assert msg == "at most 200 scored (ad, creative) pairs per request, got 210"


# ------------------------------------------------------------- a regression output -----
@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch DeepFM whose only task is a regression (a watch time in seconds)."""
    import polars as pl

    from adrank.config import RunConfig, TrainConfig
    from adrank.data.prepare import prepare_frames
    from adrank.data.schema import Schema, Task
    from adrank.pipeline import train_run
    from tests.serve.conftest import SYNTHETIC_SCHEMA, synthetic_frame

    root = tmp_path_factory.mktemp("regression")
    task = Task(name="watch", label="watch", type="regression")
    schema = Schema(tasks=(task,), features=SYNTHETIC_SCHEMA.features, name="watch_time")

    def frame(rows: int, seed: int) -> pl.DataFrame:
        raw = synthetic_frame(rows, seed)
        return raw.with_columns((pl.col("price") * 100.0).alias("watch")).drop("click")

    splits = {"train": frame(2000, 1), "valid": frame(500, 2), "test": frame(500, 3)}
    prepared = prepare_frames(schema, splits, root / "prepared")
    config = RunConfig(
        model="deepfm",
        params={"embedding_dim": 4, "hidden_units": [16]},
        train=TrainConfig(max_epochs=1, batch_size=256, progress=False, seed=1, monitor="mse"),
    )
    train_run(config, root / "run", prepared=prepared)
    return root / "run"


def test_a_regression_output_is_never_ranked_or_reported_as_a_click_probability(
    regression_run: Path, server_class
) -> None:
    from adrank.serve.app import create_app

    app = create_app(regression_run, torch_threads=None)
    with server_class(app) as live:
        url = urlsplit(live.url)
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            status, reply = post(c, "/v1/predict", {"records": [RECORD]})
            assert status == 200, reply
            assert reply["outputs"] == ["watch"] and reply["pctr"] is None
            status, reply = post(c, "/v1/rank", rank_body())
            assert status == 422, reply
            assert locs(reply) == [["body", "candidates", 0, "billing"]]
            assert "'pctr'" in reply["detail"][0]["msg"]
        finally:
            c.close()


@pytest.mark.parametrize("slots", [True, "2", 2.5, float("inf"), 0, None])
def test_slots_is_a_whole_json_number(conn: http.client.HTTPConnection, slots: Any) -> None:
    """pydantic's lax mode read `true` as 1 slot and "2" as 2; a whole float (2.0) is fine
    (``test_app.test_the_fast_and_the_validated_path_answer_alike``)."""
    status, reply = post(conn, "/v1/rank", {**rank_body(), "slots": slots})
    assert status == 422 and locs(reply) == [["body", "slots"]], reply
    status, reply = post(conn, "/v1/rank", {**rank_body(), "slots": 2})
    assert status == 200 and len(reply["slots"]) == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "it is nested too deeply"),
        (b'{"slots": ' + b"1" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
    ],
)
def test_a_body_fastapi_cannot_decode_says_why(
    conn: http.client.HTTPConnection, raw: bytes, reason: str
) -> None:
    """FastAPI answered these with a bare 400 "There was an error parsing the body"."""
    for path in ("/v1/rank", "/v1/predict"):
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        res = conn.getresponse()
        reply = strict_json(res.read())
        assert res.status == 400, reply
        assert reply["detail"][0]["loc"] == ["body"]
        assert reply["detail"][0]["msg"].startswith("the body is not valid JSON: ")
        assert reason in reply["detail"][0]["msg"]
    status, reply = post(conn, "/v1/rank", rank_body())  # other errors are unchanged
    assert status == 200
    conn.request("GET", "/no/such/path")
    res = conn.getresponse()
    assert res.status == 404 and strict_json(res.read()) == {"detail": "Not Found"}
