"""The HTTP service's error answers: 422s located where the bad value came from (a
candidate, a creative, the context), with the hints a caller needs (a field that may go in
``context``, outputs the auction cannot rank), and JSON-safe validation and parse errors.
Used by :mod:`adrank.serve.app`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adrank.serve.fastpath import RankInput
from adrank.serve.payloads import RankRequest, json_safe
from adrank.serve.predictor import Predictor, RecordError


def too_many(what: str, limit: int, got: int) -> HTTPException:
    msg = f"at most {limit} {what} per request, got {got}"
    return HTTPException(422, [{"loc": ["body", what], "msg": msg, "type": "too_long"}])


def record_error(exc: RecordError, where: list[Any], hint: str = "") -> HTTPException:
    return HTTPException(422, [{"loc": where, "msg": f"{exc}{hint}", "type": "value_error"}])


def check_reserves(req: RankRequest) -> None:
    """The legacy per-click reserve is for CPC-only requests and is not combined with R."""
    if req.reserve_price > 0 and req.reserve_ecpm > 0:
        msg = "give reserve_ecpm (per 1000 impressions) or the legacy reserve_price, not both"
        raise HTTPException(422, [{"loc": ["body", "reserve_price"], "msg": msg}])
    if req.reserve_price > 0:
        for i, cand in enumerate(req.candidates):
            if cand.billing != "cpc":
                msg = (
                    f"reserve_price is per click and applies only when every candidate is cpc; "
                    f"candidate {i} (ad_id {cand.ad_id!r}) bids {cand.billing}: give "
                    "reserve_ecpm (per 1000 impressions) instead"
                )
                raise HTTPException(422, [{"loc": ["body", "reserve_price"], "msg": msg}])


def click_output(predictor: Predictor) -> str | None:
    """The output ranked as pCTR: ``pctr``, or the only output of a single-output model
    outside the click/conversion funnel (as the first version of the service did), unless
    that output is a regression (a watch time is no click probability)."""
    if "pctr" in predictor.outputs:
        return "pctr"
    only = predictor.model_outputs
    regression = {t.output for t in predictor.feature_map.tasks if t.type == "regression"}
    if len(only) == 1 and only[0] not in ("pcvr", "pctcvr", *regression):
        return only[0]
    return None


def auction_outputs(predictor: Predictor) -> list[str]:
    """The canonical outputs the auction can use from this predictor."""
    names = [n for n in predictor.outputs if n in ("pctr", "pcvr", "pctcvr")]
    if click_output(predictor) not in (None, "pctr"):
        names.append("pctr")
    return names


_CANONICAL = ("pctr", "pcvr", "pctcvr")


def billing_hint(predictor: Predictor) -> str | None:
    """The end of a billing error for a model whose outputs the auction cannot rank (None:
    :func:`~adrank.serve.ranking.check_billing`'s own). Binary tasks without ``output:`` and
    without a click/conversion funnel to infer one from keep their own names (tasks
    ``click`` and ``conversion``: outputs ``click`` and ``conversion``), which the auction
    never reads as pCTR."""
    if click_output(predictor) is not None:
        return None
    tasks = predictor.feature_map.tasks
    named = [t.output for t in tasks if t.type == "binary" and t.output not in _CANONICAL]
    if named:
        return (
            "; outputs named after their tasks are not ranked (the auction reads only pctr, "
            "pcvr and pctcvr): declare `output: pctr` on the click task (and "
            "`output: pcvr`, or `given:` the click label, on a conversion task) in the schema "
            'and train again (docs/schema.md, "Outputs")'
        )
    regression = [t.output for t in tasks if t.type == "regression"]
    if regression:
        return f"; a regression output ({', '.join(regression)}) is no probability to rank on"
    return None


def shared_field_hint(each: str, where: str) -> str:
    """Appended to a missing required field: it may be sent once, in the context."""
    return (
        f"; a field that is the same for every {each} (the user, the page) may be sent once "
        f"in `context` instead of in {where}"
    )


def rank_record_error(req: RankRequest | RankInput, exc: RecordError) -> HTTPException:
    """The 422 for a record error of a ranked pair: located where the field came from (the
    creative's, the candidate's or the context's features), naming the candidate rather
    than the scored pair, and for a missing field saying that it may go in the context."""
    pair = 0
    for i, cand in enumerate(req.candidates):
        creatives = cand.creatives or [None]
        for j, creative in enumerate(creatives):
            if pair == exc.index:
                return _pair_error(req, exc, i, cand, j, creative)
            pair += 1
    return record_error(exc, ["body", "candidates"])


def _pair_error(
    req: RankRequest | RankInput,
    exc: RecordError,
    i: int,
    cand: Any,
    j: int,
    creative: Any,
) -> HTTPException:
    field = exc.field
    msg = str(exc).removeprefix(f"record {exc.index}: ")
    who = f"candidate {i} (ad_id {cand.ad_id!r})"
    if creative is not None:
        who += f", creative {j} (creative_id {creative.creative_id!r})"
    if creative is not None and field in creative.features:
        loc = ["body", "candidates", i, "creatives", j, "features", field]
    elif field in cand.features:
        loc = ["body", "candidates", i, "features", field]
    elif field in req.context:
        loc, who = ["body", "context", field], "context"
    else:  # sent nowhere: a missing required field
        loc = ["body", "candidates", i, "features", field]
        msg += shared_field_hint("candidate", "each candidate's features")
    detail = [{"loc": loc, "msg": f"{who}: {msg}", "type": "value_error"}]
    return HTTPException(422, detail)


def numeric_fields(predictor: Predictor) -> frozenset[str]:
    return frozenset(k for k, kind in predictor.field_kinds.items() if kind == "numeric")


def rank_features(req: RankRequest) -> Iterator[tuple[list[Any], Mapping[str, Any]]]:
    yield ["body", "context"], req.context
    for i, cand in enumerate(req.candidates):
        yield ["body", "candidates", i, "features"], cand.features
        for j, creative in enumerate(cand.creatives or ()):
            yield ["body", "candidates", i, "creatives", j, "features"], creative.features


def check_finite(outputs: Mapping[str, np.ndarray]) -> None:
    """No response may hold a non-finite number: the inputs are checked, so one here is a
    fault of the model (a 500 with a JSON body, not an unencodable response)."""
    for name, values in outputs.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise HTTPException(
                500, f"the model gave a non-finite {name} for scored record {int(bad[0])}"
            )


def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the validation errors, made JSON-safe (an echoed NaN input is "NaN"). A
    repeated id is raised by its model's validator, at the model: it is moved to the
    id's own place (``["body", "candidates", 3, "ad_id"]``), with the id as its input."""
    errors = []
    for e in exc.errors():
        error = {k: v for k, v in e.items() if k != "url"}
        if error.get("type") == "duplicate_id" and "ctx" in error:
            ctx = error.pop("ctx")
            error["loc"] = [*error["loc"], *ctx["loc"]]
            error["input"] = ctx["id"]
        errors.append(error)
    return JSONResponse({"detail": json_safe(errors)}, status_code=422)


#: FastAPI's whole message for a JSON body it could not decode (too deeply nested, an
#: integer of more than 4300 digits); :func:`unparsable_body` says which.
_PARSE_ERROR = "There was an error parsing the body"


async def unparsable_body(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's bare 400 for an undecodable body, with the reason; other HTTP errors as
    FastAPI answers them."""
    if exc.status_code != 400 or exc.detail != _PARSE_ERROR:
        return await http_exception_handler(request, exc)
    body = await request.body()  # cached by the request that failed
    try:
        json.loads(body)
        reason = "it could not be decoded"
    except RecursionError:
        reason = "it is nested too deeply"
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        reason = str(err).split(";")[0]
    detail = [
        {"type": "json_invalid", "loc": ["body"], "msg": f"the body is not valid JSON: {reason}"}
    ]
    return JSONResponse({"detail": json_safe(detail)}, status_code=400)
