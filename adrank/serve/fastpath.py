"""The fast path of ``/v1/rank``: one JSON parse and a plain check for well-formed requests.

FastAPI validates a request by building a pydantic object per candidate and per creative
(with a Python validator per bid and per id), and serializes the response through another
model: for 100 candidates that costs more server time than scoring them. Most requests are
well formed, so :func:`parse_rank_body` accepts exactly the requests that
:class:`~adrank.serve.payloads.RankRequest` accepts *in their plainest form* (strict JSON,
every value already of its final type, no list-valued feature) and returns them as a
:class:`RankInput` of :class:`~adrank.serve.ranking.AdCandidate` objects. For anything
else it returns None, and :class:`FastBodyRoute` hands the request to FastAPI's own
handler, so every error keeps its 422 body and location. The accepted values are the ones
pydantic would produce (``bid`` as a float, ids as given); tests compare the two paths.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from adrank.serve.payloads import MAX_ID_CHARS, MAX_ID_INT, MAX_MONEY, MAX_SLOTS
from adrank.serve.ranking import BILLING_TYPES, AdCandidate, Creative

_TOP_KEYS = frozenset({"context", "candidates", "slots", "reserve_price", "reserve_ecpm",
                       "request_id"})  # fmt: skip
_CANDIDATE_KEYS = frozenset({"ad_id", "bid", "billing", "features", "creatives"})
_CREATIVE_KEYS = frozenset({"creative_id", "features"})
_SCALARS = frozenset({str, int, float, bool, type(None)})
_EMPTY: dict[str, Any] = {}


@dataclass(frozen=True)
class RankInput:
    """A validated ``/v1/rank`` body (the attributes the endpoint reads from a
    :class:`~adrank.serve.payloads.RankRequest`)."""

    context: dict[str, Any]
    candidates: list[AdCandidate]
    slots: int = 1
    reserve_price: float = 0.0
    reserve_ecpm: float = 0.0
    request_id: str | None = None


def _money(value: Any) -> float | None:
    if type(value) in (int, float) and 0 <= value <= MAX_MONEY:
        return float(value)
    return None


def _identifier(value: Any) -> bool:
    if type(value) is str:
        return 0 < len(value) <= MAX_ID_CHARS
    return type(value) is int and 0 <= value <= MAX_ID_INT


def _plain_features(value: Any) -> bool:
    """A dict of scalars and lists of strings and integers (pydantic keeps these as they
    are; anything else in a list, a boolean say, takes the slow path, which refuses it)."""
    if type(value) is not dict:
        return False
    for v in value.values():
        if type(v) in _SCALARS:
            continue
        if type(v) is not list or not all(type(x) in (str, int) for x in v):
            return False
    return True


def _creatives(value: Any) -> tuple[Creative, ...] | None:
    if type(value) is not list or not value:
        return None
    out = []
    seen: set[str] = set()
    for c in value:
        if type(c) is not dict or not c.keys() <= _CREATIVE_KEYS or "creative_id" not in c:
            return None
        cid, features = c["creative_id"], c.get("features", {})
        if not _identifier(cid) or not _plain_features(features) or str(cid) in seen:
            return None
        seen.add(str(cid))
        out.append(Creative(cid, features))
    return tuple(out)


def _candidate(c: Any) -> AdCandidate | None:
    if type(c) is not dict or not c.keys() <= _CANDIDATE_KEYS:
        return None
    ad_id = c.get("ad_id")
    bid = c.get("bid")
    billing = c.get("billing", "cpc")
    features = c.get("features", _EMPTY)
    if not (type(bid) in (int, float) and 0 <= bid <= MAX_MONEY):
        return None
    if not _identifier(ad_id) or billing not in BILLING_TYPES:
        return None
    if features is not _EMPTY and not _plain_features(features):
        return None
    raw = c.get("creatives")
    creatives: tuple[Creative, ...] = ()
    if raw is not None:
        found = _creatives(raw)
        if found is None:
            return None
        creatives = found
    features = {} if features is _EMPTY else features
    return AdCandidate(ad_id, float(bid), features, creatives, billing)


def parse_rank_body(body: bytes) -> RankInput | None:
    """The request as a :class:`RankInput`, or None: not strict JSON, not in the plainest
    form, or invalid (FastAPI's handler then answers, with its error details)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # NaN/Infinity literals too: the slow path names them
    if type(data) is not dict or not data.keys() <= _TOP_KEYS:
        return None
    raw = data.get("candidates")
    context = data.get("context", {})
    if type(raw) is not list or not raw or not _plain_features(context):
        return None
    candidates = []
    ids: set[str] = set()
    for c in raw:
        ad = _candidate(c)
        if ad is None or str(ad.ad_id) in ids:
            return None  # a repeated id too: pydantic's error names the repeat's candidate
        ids.add(str(ad.ad_id))
        candidates.append(ad)
    slots = data.get("slots", 1)
    reserve_price = _money(data.get("reserve_price", 0.0))
    reserve_ecpm = _money(data.get("reserve_ecpm", 0.0))
    request_id = data.get("request_id")
    if type(slots) is not int or not 1 <= slots <= MAX_SLOTS:
        return None
    if reserve_price is None or reserve_ecpm is None:
        return None
    if request_id is not None and not (type(request_id) is str and _identifier(request_id)):
        return None
    return RankInput(context, candidates, slots, reserve_price, reserve_ecpm, request_id)


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response encoded by orjson (finite floats only; the endpoints check)."""
    return Response(orjson.dumps(content), status_code, media_type="application/json")


Endpoint = Callable[[Any], Coroutine[Any, Any, Response]]


def fast_body_route(parse: Callable[[bytes], Any]) -> type[APIRoute]:
    """An :class:`APIRoute` class whose handler first tries ``parse(body)`` on a JSON
    request and, when it gives a value, awaits the endpoint with it directly; otherwise
    (a ``+json`` one) FastAPI's handler runs, with its own parsing, validation and error
    bodies. A body of another media type is a 415
    (:func:`refuse_non_json`). The endpoint takes the body model as its only argument and returns a
    :class:`Response` itself."""

    class FastBodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            default = super().get_route_handler()
            endpoint: Endpoint = self.endpoint  # type: ignore[assignment]

            async def handler(request: Request) -> Response:
                refused = await refuse_non_json(request)
                if refused is not None:
                    return refused
                if _content_type(request.headers) == "application/json":
                    parsed = parse(await request.body())  # the body is cached for `default`
                    if parsed is not None:
                        return await endpoint(parsed)
                return await default(request)

            return handler

    return FastBodyRoute


class JsonBodyRoute(APIRoute):
    """An :class:`APIRoute` whose body must be JSON: another media type is a 415
    (:func:`refuse_non_json`) before FastAPI's handler runs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        default = super().get_route_handler()

        async def handler(request: Request) -> Response:
            refused = await refuse_non_json(request)
            return refused if refused is not None else await default(request)

        return handler


async def refuse_non_json(request: Request) -> Response | None:
    """A 415 naming the header to send for a body that is not declared JSON (a form, as
    ``curl -d`` sends, text, or no content type); None for JSON, a ``+json`` type, or no
    body at all.
    FastAPI answered a 422 echoing the whole body."""
    kind = _content_type(request.headers)
    if kind == "application/json" or kind.endswith("+json"):
        return None
    body = await request.body()  # read: the client sees the answer, not a reset connection
    if not kind and not body:
        return None  # no body at all: an optional one (/admin/reload) is left out
    sent = f"sent as {kind!r}" if kind else "sent without a Content-Type"
    detail = (
        f"the body is {sent}; send JSON with the header Content-Type: application/json "
        "(curl: -H 'Content-Type: application/json')"
    )
    return json_response({"detail": detail}, 415)


def _content_type(headers: Mapping[str, str]) -> str:
    """The request's media type, lower case, without parameters ("" when absent)."""
    return headers.get("content-type", "").split(";")[0].strip().lower()
