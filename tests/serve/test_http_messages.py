"""The messages of HTTP errors that once misled a user, over FastAPI's TestClient and a real
uvicorn server on 127.0.0.1.

* A two-task model whose outputs are named after its tasks (``click``, ``conversion``: no
  ``given``, no ``output:``) asked to rank cpc bids said ``this model gives []``; the
  message now lists the model's outputs and says how to get a ``pctr``.
* A duplicate ``ad_id`` (or ``creative_id``) was located at ``["body"]``; it now names the
  repeated id's candidate (and creative).
* A required field missing from a ranked pair named the candidate's features only; it now
  says the field may be sent per candidate or once in ``context``.
* An object as a feature value gave one error per type of the feature union (five); it is
  now one error that says what a feature value may be.
* A body over ``--max-body-bytes`` sent by a client that writes the whole body before
  reading and asks to close the connection (Python's urllib) got a reset connection
  instead of the 413: the server now reads and discards such a body, up to a bound, before
  answering.
"""

from __future__ import annotations

import copy
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_frames
from adrank.data.schema import CategoricalFeature, Schema, Task
from adrank.pipeline import train_run
from adrank.serve.fastpath import parse_rank_body

CONTEXT = {"user": "u3", "site": "s1", "price": 2.5, "age": 41}


def rank_body(n: int = 3) -> dict[str, Any]:
    cands = [
        {"ad_id": f"ad{i}", "bid": 1.0 + i, "features": {"ad": str(i), "creative": f"{i}-1"}}
        for i in range(n)
    ]
    return {"context": copy.deepcopy(CONTEXT), "candidates": cands, "slots": 2}


def locs(res: Any) -> list[list[Any]]:
    return [e["loc"] for e in res.json()["detail"]]


@pytest.fixture(scope="module")
def client(synthetic_runs: Any) -> Iterator[TestClient]:
    from adrank.serve.app import create_app

    app = create_app(synthetic_runs.run_a, torch_threads=None, max_body_bytes=64 * 1024)
    with TestClient(app) as c:
        yield c


# ------------------------------------------------------ outputs named after their tasks -----
@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch ShareBottom on tasks ``click`` and ``conversion``, neither ``given`` the
    other and no ``output:``: its outputs are named ``click`` and ``conversion``."""
    schema = Schema(
        tasks=(Task("click", "click"), Task("conversion", "conversion")),
        features=(CategoricalFeature("user"), CategoricalFeature("ad")),
        name="two_tasks",
    )

    def frame(rows: int, seed: int) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        return pl.DataFrame(
            {
                "click": (rng.random(rows) < 0.3).astype(np.int64),
                "conversion": (rng.random(rows) < 0.1).astype(np.int64),
                "user": [f"u{x}" for x in rng.integers(0, 20, rows)],
                "ad": [str(x) for x in rng.integers(0, 10, rows)],
            }
        )

    root = tmp_path_factory.mktemp("two-tasks")
    splits = {"train": frame(600, 1), "valid": frame(200, 2), "test": frame(200, 3)}
    prepared = prepare_frames(schema, splits, root / "prepared")
    config = RunConfig(
        model="sharebottom",
        params={"embedding_dim": 4},
        train=TrainConfig(max_epochs=1, batch_size=256, progress=False, seed=1, num_threads=1),
    )
    train_run(config, root / "run", prepared=prepared)
    return root / "run"


def test_a_cpc_bid_on_outputs_named_after_their_tasks_says_how_to_get_pctr(
    two_task_run: Path,
) -> None:
    from adrank.serve.app import create_app

    app = create_app(two_task_run, torch_threads=None)
    body = {
        "context": {"user": "u1"},
        "candidates": [{"ad_id": "a", "bid": 1.0, "features": {"ad": "3"}}],
    }
    with TestClient(app) as c:
        assert c.get("/healthz").json()["outputs"] == ["click", "conversion"]
        for billing in ("cpc", "cpa"):
            body["candidates"][0]["billing"] = billing
            res = c.post("/v1/rank", json=body)
            assert res.status_code == 422, res.text
            assert locs(res) == [["body", "candidates", 0, "billing"]]
            msg = res.json()["detail"][0]["msg"]
            assert "this model gives ['click', 'conversion']" in msg, msg
            assert "this model gives []" not in msg
            assert "output: pctr" in msg and "docs/schema.md" in msg, msg
        # /v1/predict still scores it, by the tasks' names
        res = c.post("/v1/predict", json={"records": [{"user": "u1", "ad": "3"}]})
        assert res.status_code == 200 and res.json()["outputs"] == ["click", "conversion"]


def test_a_click_only_model_asked_for_conversions_keeps_its_hint(client: TestClient) -> None:
    body = rank_body()
    body["candidates"][1]["billing"] = "cpa"
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422
    msg = res.json()["detail"][0]["msg"]
    assert "this model gives ['pctr']" in msg and "e.g. esmm" in msg, msg


# ------------------------------------------------------------------------ duplicate ids -----
def test_a_duplicate_ad_id_names_its_candidate_on_the_fast_path(client: TestClient) -> None:
    body = rank_body(4)
    body["candidates"][3]["ad_id"] = "ad1"
    raw = json.dumps(body).encode()
    assert parse_rank_body(raw) is None  # the fast path declines it: pydantic answers
    res = client.post("/v1/rank", content=raw, headers={"Content-Type": "application/json"})
    assert res.status_code == 422, res.text
    assert locs(res) == [["body", "candidates", 3, "ad_id"]]
    (error,) = res.json()["detail"]
    assert error["msg"] == "candidates list ad_id 'ad1' more than once (ids are compared as text)"
    assert error["input"] == "ad1"


def test_a_duplicate_ad_id_names_its_candidate_on_the_validated_path(client: TestClient) -> None:
    body = rank_body(4)
    body["slots"] = 2.0  # not the plainest form: the fast path declines the whole body
    body["candidates"][0]["ad_id"] = 7
    body["candidates"][2]["ad_id"] = "7"  # equal as text
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert locs(res) == [["body", "candidates", 2, "ad_id"]]
    assert "ad_id '7' more than once" in res.json()["detail"][0]["msg"]


def test_a_duplicate_creative_id_names_its_creative(client: TestClient) -> None:
    body = rank_body(2)
    body["candidates"][1]["creatives"] = [
        {"creative_id": "c1"},
        {"creative_id": "c2"},
        {"creative_id": "c1"},
    ]
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert locs(res) == [["body", "candidates", 1, "creatives", 2, "creative_id"]]
    assert "ad 'ad1' lists creative_id 'c1' more than once" in res.json()["detail"][0]["msg"]


# -------------------------------------------------------- a field shared by candidates -----
def test_a_missing_shared_field_says_it_may_go_in_the_context(client: TestClient) -> None:
    body = rank_body()
    del body["context"]["user"]  # meant for the context, sent nowhere
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert locs(res) == [["body", "candidates", 0, "features", "user"]]
    msg = res.json()["detail"][0]["msg"]
    assert "required field 'user' is missing" in msg, msg
    assert "candidate 0 (ad_id 'ad0')" in msg and "record 0" not in msg, msg
    assert "once in `context`" in msg, msg
    # /v1/predict has a context too
    res = client.post("/v1/predict", json={"records": [{"ad": "1", "creative": "1-1"}]})
    assert res.status_code == 422
    assert locs(res) == [["body", "records", 0, "user"]]
    assert "once in `context`" in res.json()["detail"][0]["msg"]


def test_a_missing_field_of_one_creative_pair_names_the_candidate(client: TestClient) -> None:
    body = rank_body(2)
    del body["candidates"][1]["features"]["creative"]
    body["candidates"][1]["creatives"] = [
        {"creative_id": "c1", "features": {"creative": "1-1"}},
        {"creative_id": "c2"},
    ]
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    assert locs(res) == [["body", "candidates", 1, "features", "creative"]]
    msg = res.json()["detail"][0]["msg"]
    assert "candidate 1 (ad_id 'ad1'), creative 1 (creative_id 'c2')" in msg, msg


# ------------------------------------------------------------ an object as a feature -----
ONE_ERROR = (
    "a feature value must be a string, a number, a boolean or null, or (for a history) a "
    "list of strings and integers"
)


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        (["context", "user"], ["body", "context", "user"]),
        (["candidates", 1, "features", "ad"], ["body", "candidates", 1, "features", "ad"]),
    ],
)
def test_an_object_as_a_feature_value_is_one_error(
    client: TestClient, path: list[Any], loc: list[Any]
) -> None:
    body = rank_body()
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = {"id": "u3"}
    assert parse_rank_body(json.dumps(body).encode()) is None  # pydantic answers
    res = client.post("/v1/rank", json=body)
    assert res.status_code == 422, res.text
    (error,) = res.json()["detail"]
    assert error["loc"] == loc and error["msg"] == ONE_ERROR
    assert error["input"] == {"id": "u3"}


def test_an_object_or_a_bad_history_in_predict_is_one_error(client: TestClient) -> None:
    record = {"user": "u1", "ad": "3", "creative": "3-1", "site": {"name": "s1"}}
    res = client.post("/v1/predict", json={"records": [record]})
    assert res.status_code == 422, res.text
    assert [(e["loc"], e["msg"]) for e in res.json()["detail"]] == [
        (["body", "records", 0, "site"], ONE_ERROR)
    ]
    record = {"user": "u1", "ad": "3", "creative": "3-1", "site": "s1", "hist": ["1", True]}
    res = client.post("/v1/predict", json={"records": [record]})
    assert [(e["loc"], e["msg"]) for e in res.json()["detail"]] == [
        (["body", "records", 0, "hist"], ONE_ERROR)
    ]
    res = client.post("/v1/predict", json={"records": [record | {"hist": ["1", 2]}]})
    assert res.status_code == 200, res.text  # strings and integers are fine


# ------------------------------------------------------------ a body over the limit -----
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_limit_server(synthetic_runs: Any, server_class: Any) -> Iterator[Any]:
    from adrank.serve.app import create_app

    app = create_app(synthetic_runs.run_a, torch_threads=None, max_body_bytes=LIMIT)
    with server_class(app) as server:
        yield server


def _oversized(size: int) -> bytes:
    body = rank_body()
    body["context"]["padding"] = "x" * size
    return json.dumps(body).encode()


def _urlopen(url: str, data: Any, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("size", [LIMIT + 1000, 3 * LIMIT])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_urllib_sees_the_413_of_an_oversized_body(
    small_limit_server: Any, size: int, chunked: bool
) -> None:
    raw = _oversized(size)
    headers = {"Content-Type": "application/json"}
    data: Any = raw
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        data = iter([raw[i : i + 16384] for i in range(0, len(raw), 16384)])
    status, reply = _urlopen(small_limit_server.url + "/v1/rank", data, headers)
    assert status == 413
    assert f"exceeds the limit of {LIMIT} bytes" in reply["detail"]
    # the server still serves
    status, reply = _urlopen(
        small_limit_server.url + "/v1/rank", json.dumps(rank_body()).encode(), headers
    )
    assert status == 200 and len(reply["slots"]) == 2


def test_the_default_limit_with_a_five_megabyte_body(
    synthetic_runs: Any, server_class: Any
) -> None:
    """The walkthrough's case: `adrank serve` defaults (4 MiB), urllib, a 5 MB body."""
    from adrank.serve.app import create_app

    with server_class(create_app(synthetic_runs.run_a, torch_threads=None)) as server:
        status, reply = _urlopen(
            server.url + "/v1/rank", _oversized(5_000_000), {"Content-Type": "application/json"}
        )
    assert status == 413 and "exceeds the limit of 4194304 bytes" in reply["detail"]


def _raw_exchange(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a fresh socket; everything read until the server
    closes or 5 seconds pass (a reset after the response is read is fine)."""
    parts = urlsplit(url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head)
        try:
            if body:
                sock.sendall(body)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                if b"\r\n\r\n" in received and b"}" in received.split(b"\r\n\r\n", 1)[1]:
                    break
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
    return received


def test_an_expect_100_continue_client_is_answered_without_sending_the_body(
    small_limit_server: Any,
) -> None:
    """curl sends ``Expect: 100-continue`` with large bodies: the server must answer 413 at
    once, never ``100 Continue`` (which would invite the body it is going to discard)."""
    head = (
        b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (3 * LIMIT)
    )
    started = time.monotonic()
    reply = _raw_exchange(small_limit_server.url, head)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"100 Continue" not in reply
    assert time.monotonic() - started < 4  # answered, not waiting for the body


def test_a_body_beyond_the_drain_bound_is_refused_at_once(small_limit_server: Any) -> None:
    """Past the bound the server does not read on (a client may not stream without end): it
    answers 413 at once, and a client still sending may see the connection reset."""
    head = (
        b"POST /v1/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (1000 * LIMIT)
    )
    started = time.monotonic()
    reply = _raw_exchange(small_limit_server.url, head)  # sends no body at all
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 4


def test_a_keep_alive_connection_serves_on_after_a_413(small_limit_server: Any) -> None:
    parts = urlsplit(small_limit_server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    try:
        conn.request("POST", "/v1/rank", body=_oversized(2 * LIMIT), headers=headers)
        res = conn.getresponse()
        assert res.status == 413 and b"exceeds the limit" in res.read()
        conn.request("POST", "/v1/rank", body=json.dumps(rank_body()).encode(), headers=headers)
        res = conn.getresponse()
        assert res.status == 200 and len(json.loads(res.read())["slots"]) == 2
    finally:
        conn.close()


def _refusing_app() -> Any:
    """An ASGI app that answers 413 at once, reading nothing, as ObserveAndLimit does."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too large"})

    return app


def _stream(received: list[int], chunk: int, stall: bool = False) -> Any:
    """A receive channel of endless chunks (or one chunk, then nothing), counted in
    ``received``."""

    async def receive() -> dict[str, Any]:
        if stall and received:
            await anyio.sleep(3600)  # a client that stops sending
        received.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    return receive


@pytest.mark.parametrize("stall", [False, True], ids=["endless", "stalled"])
def test_the_drain_is_bounded(stall: bool) -> None:
    """A client streaming without end (or stalling) is read up to the bound (bytes, then
    time), and then gets its 413."""
    from adrank.serve.http_metrics import DrainRefusedBody

    received: list[int] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = DrainRefusedBody(_refusing_app(), limit=10_000, seconds=0.5)
    scope = {"type": "http", "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}
    started = time.monotonic()
    anyio.run(middleware, scope, _stream(received, 1000, stall), send)
    assert sent[0]["status"] == 413 and sent[1]["body"] == b"too large"
    if stall:
        assert sum(received) == 1000 and 0.4 < time.monotonic() - started < 3
    else:
        assert sum(received) == 11_000  # past the bound by one chunk, no more


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/predict"])
def test_a_body_that_is_not_sent_as_json_gets_a_short_415(
    small_limit_server: Any, path: str
) -> None:
    """`curl -d '{...}'` sends a form: FastAPI answered 422 "Input should be a valid
    dictionary" echoing the whole body (a 3.2 MB request got a 4 MB error); now a 415 that
    names the header to send (a body without a Content-Type too). A `+json` type is JSON."""
    record = dict(CONTEXT, ad="1", creative="1-1")
    body = rank_body() if path == "/v1/rank" else {"records": [record]}
    raw = json.dumps(body).encode()
    url = small_limit_server.url + path
    for kind in ("application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
        status, reply = _urlopen(url, raw, {"Content-Type": kind})
        assert status == 415, reply
        assert "Content-Type: application/json" in reply["detail"]
        assert len(json.dumps(reply)) < 300  # the body is not echoed
    status, reply = _urlopen(url, raw, {"Content-Type": "application/vnd.api+json"})
    assert status == 200, reply
    host, port = urlsplit(small_limit_server.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", path, body=raw, headers={"Content-Length": str(len(raw))})
    res = conn.getresponse()
    assert res.status == 415 and b"without a Content-Type" in res.read()
    conn.close()


def test_a_request_id_of_the_wrong_length_speaks_of_characters(client: TestClient) -> None:
    """`Value should have at most 128 items` (the optional field's generic message)."""
    for rid, words in (("x" * 200, "1 to 128 characters, got 200"), ("", "got 0")):
        res = client.post("/v1/rank", json=rank_body() | {"request_id": rid})
        assert res.status_code == 422
        assert words in res.json()["detail"][0]["msg"]
