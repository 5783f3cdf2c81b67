"""Strict money, id and feature fields over one keep-alive connection to a real server.

Bodies are sent raw (Python's json would refuse to write some of these literals): every
bad request answers 422 with a JSON body whose ``loc`` names the field, and the next
request on the same connection succeeds (the first version answered 500 and reset the
connection, because the error body echoed a NaN that JSON cannot encode).
"""

from __future__ import annotations

import copy
import http.client
import json
from typing import Any

import pytest

from adrank.serve.payloads import MAX_MONEY

CONTEXT = {"user": "u3", "site": "s1", "price": 2.5, "age": 41, "hist": [1, 2, 4]}


def body(n: int = 3) -> dict[str, Any]:
    cands = [
        {"ad_id": f"ad{i}", "bid": 1.0 + i, "features": {"ad": str(i), "creative": f"{i}-1"}}
        for i in range(n)
    ]
    return {"context": copy.deepcopy(CONTEXT), "candidates": cands, "slots": 2}


def strict_json(raw: bytes) -> Any:
    """Parse as standard JSON: NaN/Infinity literals are errors."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(raw, parse_constant=refuse)


def post(conn: http.client.HTTPConnection, path: str, raw: bytes) -> tuple[int, Any]:
    conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
    res = conn.getresponse()
    data = res.read()
    assert not res.will_close, "the server closed the keep-alive connection"
    return res.status, strict_json(data)


def with_literal(payload: dict[str, Any], path: list[Any], literal: str) -> bytes:
    """``payload`` as JSON with the value at ``path`` replaced by a raw ``literal``."""
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "__RAW__"
    return json.dumps(payload).replace('"__RAW__"', literal).encode()


MONEY_CASES = [
    (["candidates", 0, "bid"], "NaN", "bid must be a finite JSON number between 0 and 1000000, got NaN"),  # noqa: E501
    (["candidates", 1, "bid"], "Infinity", "got Infinity"),
    (["candidates", 1, "bid"], "-Infinity", "got -Infinity"),
    (["candidates", 0, "bid"], "1e999", "got Infinity (or a number too large for a double)"),
    (["candidates", 0, "bid"], "1e308", "got 1e+308"),
    (["candidates", 0, "bid"], "1" + "0" * 400, "got an integer of 401 digits"),
    (["candidates", 0, "bid"], "1000000.5", "got 1000000.5"),
    (["candidates", 0, "bid"], "-0.5", "got -0.5"),
    (["candidates", 2, "bid"], '"1.5"', "got the string '1.5'"),
    (["candidates", 2, "bid"], "true", "got the boolean true"),
    (["candidates", 0, "bid"], "null", "got null"),
    (["reserve_price"], "NaN", "reserve_price must be a finite JSON number"),
    (["reserve_ecpm"], "Infinity", "reserve_ecpm must be a finite JSON number"),
    (["reserve_ecpm"], '"2"', "got the string '2'"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "literal", "message"), MONEY_CASES)
def test_bad_money_is_422_naming_the_field_and_the_connection_lives(
    conn: http.client.HTTPConnection, path: list[Any], literal: str, message: str
) -> None:
    status, reply = post(conn, "/v1/rank", with_literal(body(), path, literal))
    assert status == 422, reply
    errors = reply["detail"]
    assert [e["loc"] for e in errors] == [["body", *path]]
    assert message in errors[0]["msg"]
    assert errors[0]["type"] == "money"
    status, ok = post(conn, "/v1/rank", json.dumps(body()).encode())  # same connection
    assert status == 200 and len(ok["slots"]) == 2, ok


def test_the_maximum_bid_is_accepted_and_every_number_is_finite(
    conn: http.client.HTTPConnection,
) -> None:
    payload = body()
    payload["candidates"][0]["bid"] = MAX_MONEY
    status, reply = post(conn, "/v1/rank", json.dumps(payload).encode())  # strict_json inside
    assert status == 200
    top = reply["slots"][0]
    assert top["ad_id"] == "ad0" and top["bid"] == MAX_MONEY
    assert top["ecpm"] == top["score"] == pytest.approx(1000 * MAX_MONEY * top["pctr"])


ID_CASES = [
    ("", "ad_id must be a non-empty string of at most 128 characters or an integer"),
    ('"' + "x" * 129 + '"', "got a string of 129 characters"),
    ("true", "got the boolean true"),
    ("1.5", "got a float"),
    ("-1", "got -1"),
    (str(2**53), "got an integer of 16 digits"),
    ("-7", "got -7"),
    ("null", "got null"),
]


@pytest.mark.parametrize(("literal", "message"), ID_CASES)
def test_ad_ids_are_short_strings_or_safe_integers(
    conn: http.client.HTTPConnection, literal: str, message: str
) -> None:
    literal = literal or '""'
    status, reply = post(
        conn, "/v1/rank", with_literal(body(), ["candidates", 1, "ad_id"], literal)
    )
    assert status == 422, reply
    assert [e["loc"] for e in reply["detail"]] == [["body", "candidates", 1, "ad_id"]]
    assert message in reply["detail"][0]["msg"]
    payload = body()
    payload["candidates"][1]["ad_id"] = 2**53 - 1  # the largest integer id
    status, reply = post(conn, "/v1/rank", json.dumps(payload).encode())
    assert status == 200


def test_ids_equal_as_text_are_duplicates(conn: http.client.HTTPConnection) -> None:
    payload = body()
    payload["candidates"][0]["ad_id"] = 7
    payload["candidates"][1]["ad_id"] = "7"
    status, reply = post(conn, "/v1/rank", json.dumps(payload).encode())
    assert status == 422 and "ad_id '7' more than once" in reply["detail"][0]["msg"]


FEATURE_CASES = [
    (["context", "price"], "NaN", "feature 'price' is NaN; send null for a missing value"),
    (["context", "age"], "-Infinity", "feature 'age' is -Infinity"),
    (["context", "price"], '"Infinity"', "feature 'price' is the string 'Infinity'"),
    (["context", "price"], "1e39", "beyond a float32 model input"),
    (["context", "age"], "1" + "0" * 400, "'age' is an integer of 401 digits, beyond a float32"),
    (["candidates", 1, "features", "price"], "1e999", "feature 'price' is Infinity"),
    (["candidates", 0, "features", "ad"], "NaN", "feature 'ad' is NaN"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "literal", "message"), FEATURE_CASES)
def test_non_finite_feature_values_are_422(
    conn: http.client.HTTPConnection, path: list[Any], literal: str, message: str
) -> None:
    status, reply = post(conn, "/v1/rank", with_literal(body(), path, literal))
    assert status == 422, reply
    assert [e["loc"] for e in reply["detail"]] == [["body", *path]]
    assert message in reply["detail"][0]["msg"]
    # the missing-value policy: null (or an absent numeric field) takes the fill value
    payload = body()
    payload["context"]["price"] = None
    payload["context"].pop("age")
    status, _ = post(conn, "/v1/rank", json.dumps(payload).encode())
    assert status == 200


def test_predict_records_follow_the_same_rules(conn: http.client.HTTPConnection) -> None:
    record = {"user": "u1", "ad": "3", "creative": "3-1", "site": "s1", "price": 1.0}
    raw = with_literal({"records": [dict(record), dict(record)]}, ["records", 1, "price"], "NaN")
    status, reply = post(conn, "/v1/predict", raw)
    assert status == 422
    assert [e["loc"] for e in reply["detail"]] == [["body", "records", 1, "price"]]
    status, reply = post(conn, "/v1/predict", json.dumps({"records": [record]}).encode())
    assert status == 200 and 0 < reply["pctr"][0] < 1


def test_malformed_json_keeps_the_connection(conn: http.client.HTTPConnection) -> None:
    status, reply = post(conn, "/v1/rank", b'{"candidates": [NaN')
    assert status == 422 and reply["detail"][0]["type"] == "json_invalid"
    status, _ = post(conn, "/v1/rank", json.dumps(body()).encode())
    assert status == 200


def test_a_non_finite_model_output_is_a_json_500_not_a_null() -> None:
    import numpy as np
    from fastapi import HTTPException

    from adrank.serve.http_errors import check_finite

    check_finite({"pctr": np.array([0.25, 1.0])})
    with pytest.raises(HTTPException) as err:
        check_finite({"pctr": np.array([0.25, 0.5]), "pcvr": np.array([0.1, np.inf])})
    assert err.value.status_code == 500
    assert err.value.detail == "the model gave a non-finite pcvr for scored record 1"
