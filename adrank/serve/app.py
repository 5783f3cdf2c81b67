"""The HTTP ranking service (FastAPI + uvicorn; ``pip install 'adrank[serve]'``).

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``; ``docs/serving.md``):

* ``POST /v1/predict`` ``{"records": [{field: value}, ...]}`` -> ``{"outputs": ["pctr",
  "pcvr", "pctcvr"], "predictions": [{"pctr": .., "pcvr": .., "pctcvr": ..}, ...], "pctr":
  [...], "passthrough": [...] | null, "model_version": ...}``: every output by name per
  record (the model's and the derived ones, see :class:`~adrank.serve.predictor.Predictor`).
  ``pctr`` is kept for single-task clients: the click probability per record (a
  single-output model's only output), ``null`` for a model without one. ``passthrough``
  echoes each record's pass-through columns (``roles.passthrough``) when the run has any;
* ``POST /v1/rank`` ``{"context": {...}, "candidates": [{"ad_id", "bid", "billing"?: "cpc" |
  "cpa" | "ocpc", "features", "creatives"?: [{"creative_id", "features"}]}], "slots": k,
  "reserve_ecpm"?: R, "reserve_price"?: r}`` -> the filled slots with ``ad_id``,
  ``creative_id``, ``billing``, ``billing_event``, ``q``, ``score`` (= ``ecpm``), ``pctr``,
  ``pcvr``, ``pctcvr`` and ``price`` per billing event (auction rules:
  :mod:`adrank.serve.ranking`). A ``cpa``/``ocpc`` candidate sent to a model without a
  conversion output answers 422 naming the candidate and the missing output; the legacy
  per-click ``reserve_price`` is accepted only when every candidate is ``cpc``;
* ``GET /healthz``; ``GET /metrics`` (Prometheus text: requests by method/path/status, a
  latency histogram per path, model info, reloads);
* ``POST /admin/reload`` ``{"run_dir"?: path}`` loads an artifact fully, then swaps it in
  under a lock. Requests already running keep the predictor they started with, so none is
  dropped; a failed load leaves the old model serving.

Invalid payloads answer 422 with one entry per offending field (``loc`` names it); bodies
over ``max_body_bytes`` answer 413; more than ``max_candidates`` ads (or ``max_records``
scored rows) answer 422. Scoring is CPU-bound, so the scoring endpoints are sync functions
(FastAPI runs them in its threadpool) and torch uses ``torch_threads`` intra-op threads.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

try:
    import anyio
    import anyio.to_thread
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import PlainTextResponse
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the HTTP service needs fastapi and uvicorn: pip install 'adrank[serve]'"
    ) from exc

import torch

from adrank.artifact import ArtifactError
from adrank.data.schema import SchemaError
from adrank.serve.payloads import (
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
    ReloadRequest,
    SlotOut,
)
from adrank.serve.predictor import Predictor, RecordError
from adrank.serve.ranking import (
    AdCandidate,
    BillingError,
    Creative,
    check_billing,
    rank_ads,
)

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Latency histogram bucket bounds (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip


# ------------------------------------------------------------------------- model ------
class ModelHolder:
    """The current Predictor; :meth:`reload` loads a new one fully, then swaps the reference
    under a lock (readers take a reference once per request and keep it)."""

    def __init__(self, run_dir: str | Path, **predictor_kwargs: Any) -> None:
        self._kwargs = predictor_kwargs
        self._swap = threading.Lock()
        self._reloading = threading.Lock()
        self.run_dir = Path(run_dir)
        self.predictor = Predictor.load(self.run_dir, **predictor_kwargs)
        self.reloads = 0

    def current(self) -> tuple[Predictor, Path]:
        with self._swap:
            return self.predictor, self.run_dir

    def reload(self, run_dir: str | Path | None = None) -> tuple[str, str]:
        """Load ``run_dir`` (default: the current one) and swap it in -> (old, new) version."""
        with self._reloading:  # one reload at a time; scoring never waits on this lock
            target = Path(run_dir) if run_dir else self.current()[1]
            fresh = Predictor.load(target, **self._kwargs)
            with self._swap:
                old = self.predictor
                self.predictor, self.run_dir = fresh, target
                self.reloads += 1
        logger.info("reloaded %s: %s -> %s", target, old.version, fresh.version)
        return old.version, fresh.version


# ----------------------------------------------------------------------- metrics ------
def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters and latency histograms, rendered in Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.scored_rows = 0

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.latency.setdefault(path, [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.latency_sum[path] = self.latency_sum.get(path, 0.0) + seconds

    def add_scored(self, rows: int) -> None:
        with self._lock:
            self.scored_rows += rows

    def render(self, holder: ModelHolder) -> str:
        predictor, run_dir = holder.current()
        manifest = predictor.artifact.manifest
        lines = [
            "# HELP adrank_http_requests_total HTTP requests by method, path and status.",
            "# TYPE adrank_http_requests_total counter",
        ]
        with self._lock:
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(
                    f'adrank_http_requests_total{{method="{method}",path="{_label(path)}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP adrank_http_request_duration_seconds Request latency by path.",
                "# TYPE adrank_http_request_duration_seconds histogram",
            ]
            bucket = "adrank_http_request_duration_seconds_bucket"
            for path, counts in sorted(self.latency.items()):
                p = _label(path)
                for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
                    lines.append(f'{bucket}{{path="{p}",le="{bound}"}} {n}')
                lines.append(
                    f'adrank_http_request_duration_seconds_bucket{{path="{p}",le="+Inf"}} '
                    f"{counts[-1]}"
                )
                lines.append(
                    f'adrank_http_request_duration_seconds_sum{{path="{p}"}} '
                    f"{self.latency_sum[path]:.6f}"
                )
                lines.append(
                    f'adrank_http_request_duration_seconds_count{{path="{p}"}} {counts[-1]}'
                )
            scored = self.scored_rows
        info = {
            "model": str(manifest.get("model")),
            "version": predictor.version,
            "dataset": str(manifest.get("dataset")),
            "run_dir": str(run_dir),
            "calibration": str(manifest.get("calibration_method") or "none"),
        }
        labels = ",".join(f'{k}="{_label(v)}"' for k, v in info.items())
        lines += [
            "# HELP adrank_model_info The model being served (value is always 1).",
            "# TYPE adrank_model_info gauge",
            f"adrank_model_info{{{labels}}} 1",
            "# HELP adrank_model_reloads_total Successful model reloads.",
            "# TYPE adrank_model_reloads_total counter",
            f"adrank_model_reloads_total {holder.reloads}",
            "# HELP adrank_scored_records_total Records scored by the model.",
            "# TYPE adrank_scored_records_total counter",
            f"adrank_scored_records_total {scored}",
        ]
        return "\n".join(lines) + "\n"


class ObserveAndLimit:
    """Outer ASGI middleware: rejects bodies over ``max_body_bytes`` with 413 (by
    Content-Length, or while reading a chunked body) and records every HTTP request's
    status and latency. Paths outside the app's routes are recorded as ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, paths: set[str]):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.paths = paths

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body exceeds the limit of {self.max_body_bytes} bytes"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        path = scope["path"] if scope["path"] in self.paths else "other"

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            length = dict(scope.get("headers") or ()).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._reject(send_observed)
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                chunks: list[bytes] = []
                size = 0
                more = True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_body_bytes:
                        await self._reject(send_observed)
                        return
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                sent = False

                async def replay() -> Message:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_observed)
            else:
                await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - start)


# ---------------------------------------------------------------------------- app -----
def _too_many(what: str, limit: int, got: int) -> HTTPException:
    msg = f"at most {limit} {what} per request, got {got}"
    return HTTPException(422, [{"loc": ["body", what], "msg": msg, "type": "too_long"}])


def _record_error(exc: RecordError, where: list[Any]) -> HTTPException:
    return HTTPException(422, [{"loc": where, "msg": str(exc), "type": "value_error"}])


def _check_reserves(req: RankRequest) -> None:
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


def _click_output(predictor: Predictor) -> str | None:
    """The output ranked as pCTR: ``pctr``, or the only output of a single-output model
    outside the click/conversion funnel (as the first version of the service did)."""
    if "pctr" in predictor.outputs:
        return "pctr"
    only = predictor.model_outputs
    if len(only) == 1 and only[0] not in ("pcvr", "pctcvr"):
        return only[0]
    return None


def _auction_outputs(predictor: Predictor) -> list[str]:
    """The canonical outputs the auction can use from this predictor."""
    names = [n for n in predictor.outputs if n in ("pctr", "pcvr", "pctcvr")]
    if _click_output(predictor) not in (None, "pctr"):
        names.append("pctr")
    return names


def _rank_location(req: RankRequest, exc: RecordError) -> list[Any]:
    """Where in a rank request the field of the failing scored pair came from."""
    pair = 0
    for i, cand in enumerate(req.candidates):
        creatives = cand.creatives or [None]
        for j, creative in enumerate(creatives):
            if pair == exc.index:
                if creative is not None and exc.field in creative.features:
                    return ["body", "candidates", i, "creatives", j, "features", exc.field]
                if exc.field in cand.features or exc.field not in req.context:
                    return ["body", "candidates", i, "features", exc.field]
                return ["body", "context", exc.field]
            pair += 1
    return ["body", "candidates"]


def create_app(
    run_dir: str | Path,
    *,
    max_candidates: int = 1000,
    max_records: int = 10_000,
    max_body_bytes: int = 4 * 1024 * 1024,
    torch_threads: int | None = 1,
    enable_admin: bool = True,
    backend: str = "torch",
    optional_fields: tuple[str, ...] = (),
    scoring_threads: int = 1,
) -> FastAPI:
    """Build the service for a run directory (loaded now; errors surface immediately).

    ``torch_threads`` sets torch's intra-op threads for the process (None: leave as is);
    ``scoring_threads`` bounds how many requests are scored at once per process."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    holder = ModelHolder(run_dir, backend=backend, optional_fields=optional_fields)
    metrics = Metrics()
    app = FastAPI(
        title="adrank ranking service",
        version=holder.predictor.version,
        description="Named CTR/CVR probabilities and a generalized second-price auction with "
        "CPC, CPA and oCPC billing.",
    )
    app.state.holder = holder
    app.state.metrics = metrics

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        predictor, current = holder.current()
        return {
            "status": "ok",
            "model": predictor.artifact.manifest.get("model"),
            "model_version": predictor.version,
            "run_dir": str(current),
            "fields": sorted(predictor.field_kinds),
            "outputs": predictor.outputs,
            "required_fields": list(predictor.required_fields),
        }

    # CPU-bound scoring runs in worker threads, at most ``scoring_threads`` at a time: more
    # threads than cores only interleave requests under the GIL, which raises every
    # request's latency without adding throughput; waiting requests queue in the event loop.
    limiter = anyio.CapacityLimiter(scoring_threads)

    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(req: PredictRequest) -> PredictResponse:
        return await anyio.to_thread.run_sync(predict_sync, req, limiter=limiter)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(req: RankRequest) -> RankResponse:
        return await anyio.to_thread.run_sync(rank_sync, req, limiter=limiter)

    def predict_sync(req: PredictRequest) -> PredictResponse:
        if len(req.records) > max_records:
            raise _too_many("records", max_records, len(req.records))
        predictor, _ = holder.current()
        try:
            probs = predictor.predict_outputs(req.records)
        except RecordError as exc:
            raise _record_error(exc, ["body", "records", exc.index or 0, exc.field]) from exc
        except SchemaError as exc:
            raise HTTPException(422, [{"loc": ["body", "records"], "msg": str(exc)}]) from exc
        metrics.add_scored(len(req.records))
        names = predictor.outputs
        columns = [probs[name].tolist() for name in names]
        click = _click_output(predictor)
        passthrough = None
        if predictor.passthrough:
            passthrough = [{c: r.get(c) for c in predictor.passthrough} for r in req.records]
        return PredictResponse(
            outputs=names,
            predictions=[dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)],
            pctr=None if click is None else probs[click].tolist(),
            passthrough=passthrough,
            model_version=predictor.version,
        )

    def rank_sync(req: RankRequest) -> RankResponse:
        if len(req.candidates) > max_candidates:
            raise _too_many("candidates", max_candidates, len(req.candidates))
        pairs = sum(len(c.creatives or (None,)) for c in req.candidates)
        if pairs > max_records:
            raise _too_many("records", max_records, pairs)
        _check_reserves(req)
        predictor, _ = holder.current()
        ads = [
            AdCandidate(
                c.ad_id,
                c.bid,
                c.features,
                tuple(Creative(x.creative_id, x.features) for x in c.creatives or ()),
                c.billing,
            )
            for c in req.candidates
        ]
        try:
            check_billing(ads, _auction_outputs(predictor))
        except BillingError as exc:
            loc = ["body", "candidates", exc.index, "billing"]
            detail = [{"loc": loc, "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail) from exc

        def score(records: list[dict[str, Any]]) -> dict[str, Any]:
            probs = predictor.predict_outputs(records)
            click = _click_output(predictor)
            return probs if click in (None, "pctr") else {"pctr": probs[click]}

        try:
            result = rank_ads(
                score,
                req.context,
                ads,
                req.slots,
                req.reserve_price,
                reserve_ecpm=req.reserve_ecpm,
            )
        except RecordError as exc:
            raise _record_error(exc, _rank_location(req, exc)) from exc
        except SchemaError as exc:
            raise HTTPException(422, [{"loc": ["body"], "msg": str(exc)}]) from exc
        metrics.add_scored(result.scored_pairs)
        return RankResponse(
            slots=[SlotOut(**vars(s)) for s in result.slots],
            model_version=predictor.version,
            scored_pairs=result.scored_pairs,
            eligible_ads=result.eligible_ads,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(holder), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    if enable_admin:

        @app.post("/admin/reload")
        def reload(req: ReloadRequest | None = None) -> dict[str, Any]:
            t0 = time.perf_counter()
            try:
                old, new = holder.reload(req.run_dir if req else None)
            except (ArtifactError, FileNotFoundError, ValueError, KeyError) as exc:
                msg = f"reload failed, still serving the old model: {exc}"
                raise HTTPException(409, msg) from exc
            return {
                "previous_version": old,
                "model_version": new,
                "run_dir": str(holder.current()[1]),
                "seconds": round(time.perf_counter() - t0, 4),
            }

    paths = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(ObserveAndLimit, metrics=metrics, max_body_bytes=max_body_bytes, paths=paths)
    return app


# ------------------------------------------------------------------------- runner -----
_ENV_CONFIG = "ADRANK_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker serving: ``create_app(**json($ADRANK_SERVE_CONFIG))``."""
    config = json.loads(os.environ[_ENV_CONFIG])
    config["optional_fields"] = tuple(config.get("optional_fields", ()))
    return create_app(**config)


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    log_level: str = "info",
    **app_options: Any,
) -> None:
    """Run the service with uvicorn (blocks). With ``workers > 1`` each worker process loads
    the artifact and ``/admin/reload`` is disabled (it would reload one worker only):
    restart the server to change the model."""
    if workers <= 1:
        app = create_app(run_dir, **app_options)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    Predictor.load(run_dir)  # fail fast in the parent, with the artifact's own error
    app_options = {**app_options, "run_dir": str(run_dir), "enable_admin": False}
    os.environ[_ENV_CONFIG] = json.dumps(app_options)
    config = uvicorn.Config(
        "adrank.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[_listening_socket(host, port)]).run()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket shared by the worker processes. It is created with an explicit
    ``IPPROTO_TCP`` because asyncio only sets TCP_NODELAY on connections accepted from such
    sockets; uvicorn's own multi-worker socket has proto 0, and the small response writes
    then stall ~40 ms on Nagle + delayed ACK."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock
