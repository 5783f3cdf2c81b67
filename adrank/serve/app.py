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
  "reserve_ecpm"?: R, "reserve_price"?: r, "request_id"?: id}`` -> the filled slots with
  ``ad_id``, ``creative_id``, ``billing``, ``billing_event``, ``q``, ``score`` (= ``ecpm``),
  ``pctr``, ``pcvr``, ``pctcvr`` and ``price`` per billing event (auction rules:
  :mod:`adrank.serve.ranking`), the ``model_version`` and the ``request_id``. With an
  impression log (:mod:`adrank.serve.impressions`) each request is logged;
* ``GET /healthz``; ``GET /metrics`` (Prometheus text: requests by method/path/status, a
  latency histogram per path, model info, reloads, impression-log counters, the store
  follower's when following a model store, and ``adrank_domain_fallback_total``: scored
  rows whose domain was missing or unseen, which took the trained fallback slot of a
  multi-domain model, :mod:`adrank.serve.domains`);
* ``POST /admin/reload`` ``{"model"?: reference}`` exists only with an admin token
  (:mod:`adrank.serve.admin`; 401/403 without the right one). It resolves the reference
  inside the model root (:mod:`adrank.serve.model_root`; 403 outside it), passes the model
  through the swap gate (:mod:`adrank.serve.swap_gate`; 409 with the reason when refused)
  and swaps it in under a lock. Requests already running keep the predictor they started
  with, so none is dropped; a refused model leaves the old one serving.

Invalid payloads answer 422 with one entry per offending field (``loc`` names it; the
bodies are JSON-safe even when the input was a NaN); bodies over ``max_body_bytes`` answer
413, once the rest of the body is read and discarded up to a bound
(:class:`~adrank.serve.http_metrics.DrainRefusedBody`); more than ``max_candidates`` ads
(or ``max_records`` scored rows) answer 422. Scoring is CPU-bound, so it runs in worker
threads (at most ``scoring_threads`` at once) and torch uses ``torch_threads`` intra-op
threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

try:
    import anyio
    import anyio.to_thread
    import uvicorn
    from fastapi import Depends, FastAPI, HTTPException, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the HTTP service needs fastapi and uvicorn: pip install 'adrank[serve]'"
    ) from exc

import torch
from uvicorn.supervisors import Multiprocess

from adrank.data.schema import SchemaError
from adrank.serve.admin import AdminAuth, warn_if_exposed
from adrank.serve.domains import DomainFallbacks
from adrank.serve.fastpath import (
    JsonBodyRoute,
    RankInput,
    fast_body_route,
    json_response,
    parse_rank_body,
)
from adrank.serve.history import HistoryClipper
from adrank.serve.holder import ModelHolder
from adrank.serve.http_errors import (
    auction_outputs,
    billing_hint,
    check_finite,
    check_reserves,
    click_output,
    invalid_request,
    numeric_fields,
    rank_features,
    rank_record_error,
    record_error,
    shared_field_hint,
    too_many,
    unparsable_body,
)
from adrank.serve.http_metrics import (
    DRAIN_FACTOR,
    DrainRefusedBody,
    Metrics,
    ObserveAndLimit,
    with_label,
)
from adrank.serve.impressions import ImpressionLog, rank_record
from adrank.serve.model_root import (
    BadModelReference,
    ModelNotFound,
    ModelRoot,
    OutsideModelRoot,
)
from adrank.serve.payloads import (
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
    ReloadRequest,
    feature_errors,
)
from adrank.serve.predictor import RecordError
from adrank.serve.ranking import (
    AdCandidate,
    BillingError,
    Creative,
    check_billing,
    rank_ads,
)
from adrank.serve.store_follower import DEFAULT_POLL_INTERVAL, StoreFollower, start_version
from adrank.serve.swap_gate import SwapRefused

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- app -----
def create_app(
    run_dir: str | Path,
    *,
    model_root: str | Path | None = None,
    admin_token: str | None = None,
    impression_log: str | Path | ImpressionLog | None = None,
    max_candidates: int = 1000,
    max_records: int = 10_000,
    max_body_bytes: int = 4 * 1024 * 1024,
    torch_threads: int | None = 1,
    backend: str = "torch",
    optional_fields: tuple[str, ...] = (),
    scoring_threads: int = 1,
    follow_store: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    worker_label: bool = False,
) -> FastAPI:
    """Build the service (the model is loaded now; errors surface immediately).

    ``run_dir`` is a run directory, whose parent is then the model root; with
    ``model_root`` it is a reference inside that root (``name``, ``name/VERSION``).
    ``admin_token`` enables ``/admin/*`` (None: they answer 404). ``impression_log`` is a
    directory (or an :class:`ImpressionLog`) that receives one record per ``/v1/rank``.
    ``torch_threads`` sets torch's intra-op threads for the process (None: leave as is);
    ``scoring_threads`` bounds how many requests are scored at once per process.
    ``follow_store``: ``model_root`` is a model store and ``run_dir`` a model name in it;
    the app serves its ``latest`` version and follows it every ``poll_interval`` seconds
    (:mod:`adrank.serve.store_follower`). ``worker_label``: every ``/metrics`` sample
    carries ``worker="<pid>"`` (a multi-worker server: each scrape reaches one worker)."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    auth = AdminAuth(admin_token) if admin_token else None  # validates the token first
    if model_root is None:
        if follow_store:
            raise ValueError("following a store needs the store as model_root")
        root, reference = ModelRoot.around(run_dir)
    else:
        root, reference = ModelRoot(model_root), str(run_dir)
    kwargs: dict[str, Any] = {"backend": backend, "optional_fields": optional_fields}
    follower: StoreFollower | None = None
    if follow_store:
        reference, first, refused = start_version(root, reference, **kwargs)
        holder = ModelHolder(root, reference, predictor=first, **kwargs)
        follower = StoreFollower(holder, str(run_dir), poll_interval, refused)
    else:
        holder = ModelHolder(root, reference, **kwargs)
    log = (
        impression_log
        if isinstance(impression_log, ImpressionLog) or impression_log is None
        else ImpressionLog(impression_log)
    )
    metrics = Metrics()
    histories = HistoryClipper()  # request histories: cut to max_len, counted in /metrics
    domains = DomainFallbacks()  # unknown domains take the trained fallback, counted

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            await anyio.to_thread.run_sync(follower.stop)
        if log is not None:
            await anyio.to_thread.run_sync(log.close)

    app = FastAPI(
        title="adrank ranking service",
        version=holder.predictor.version,
        description="Named CTR/CVR probabilities and a generalized second-price auction with "
        "CPC, CPA and oCPC billing.",
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.impression_log = log
    app.state.store_follower = follower
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, unparsable_body)  # type: ignore[arg-type]

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        predictor, current = holder.current()
        return {
            "status": "ok",
            "model": predictor.artifact.manifest.get("model"),
            "model_version": predictor.version,
            "model_reference": holder.reference,
            "backend": predictor.backend,
            "run_dir": str(current),
            "fields": sorted(predictor.field_kinds),
            "outputs": predictor.outputs,
            "required_fields": list(predictor.required_fields),
            "store": None if follower is None else follower.status(),
        }

    # CPU-bound scoring runs in worker threads, at most ``scoring_threads`` at a time: more
    # threads than cores only interleave requests under the GIL, which raises every
    # request's latency without adding throughput; waiting requests queue in the event loop.
    limiter = anyio.CapacityLimiter(scoring_threads)

    async def predict(req: PredictRequest) -> PredictResponse:
        return await anyio.to_thread.run_sync(predict_sync, req, limiter=limiter)

    app.router.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        route_class_override=JsonBodyRoute,
    )

    async def rank(req: RankRequest) -> Response:
        return await anyio.to_thread.run_sync(rank_sync, req, limiter=limiter)

    # well-formed bodies skip FastAPI's per-candidate pydantic objects (serve/fastpath.py)
    app.router.add_api_route(
        "/v1/rank",
        rank,
        methods=["POST"],
        response_model=RankResponse,
        route_class_override=fast_body_route(parse_rank_body),
    )

    def predict_sync(req: PredictRequest) -> PredictResponse:
        if len(req.records) > max_records:
            raise too_many("records", max_records, len(req.records))
        predictor, reference = holder.serving()
        where = ((["body", "records", i], r) for i, r in enumerate(req.records))
        errors = feature_errors(where, numeric_fields(predictor))
        in_context = iter([(["body", "context"], req.context)])
        errors += feature_errors(in_context, numeric_fields(predictor))
        if errors:
            raise HTTPException(422, errors)
        limits = histories.limits(predictor.processor.schema)
        records = histories.with_context(req.context, req.records, limits)
        try:
            probs = predictor.predict_outputs(records)
            domains.observe(predictor, records)
        except RecordError as exc:
            i = exc.index or 0
            shared = exc.field in req.context and exc.field not in req.records[i]
            loc = ["body", "context", exc.field] if shared else ["body", "records", i, exc.field]
            missing = exc.field not in req.context and exc.field not in req.records[i]
            hint = shared_field_hint("record", "each record") if missing else ""
            raise record_error(exc, loc, hint) from exc
        except SchemaError as exc:
            raise HTTPException(422, [{"loc": ["body", "records"], "msg": str(exc)}]) from exc
        check_finite(probs)
        metrics.add_scored(len(req.records))
        names = predictor.outputs
        columns = [probs[name].tolist() for name in names]
        click = click_output(predictor)
        passthrough = None
        if predictor.passthrough:
            passthrough = [{c: r.get(c) for c in predictor.passthrough} for r in records]
        return PredictResponse(
            outputs=names,
            predictions=[dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)],
            pctr=None if click is None else probs[click].tolist(),
            passthrough=passthrough,
            model_version=predictor.version,
            model_reference=reference,
        )

    def rank_sync(req: RankRequest | RankInput) -> Response:
        started = time.time()
        if len(req.candidates) > max_candidates:
            raise too_many("candidates", max_candidates, len(req.candidates))
        pairs = sum(len(c.creatives or (None,)) for c in req.candidates)
        if pairs > max_records:
            msg = f"at most {max_records} scored (ad, creative) pairs per request, got {pairs}"
            raise HTTPException(
                422, [{"loc": ["body", "candidates"], "msg": msg, "type": "too_long"}]
            )
        check_reserves(req)
        predictor, reference = holder.serving()
        # a body the fast path parsed went through orjson, which refuses non-Unicode text
        errors = feature_errors(
            rank_features(req), numeric_fields(predictor), text=not isinstance(req, RankInput)
        )
        if errors:
            raise HTTPException(422, errors)
        ads = (
            req.candidates
            if isinstance(req, RankInput)
            else [
                AdCandidate(
                    c.ad_id,
                    c.bid,
                    c.features,
                    tuple(Creative(x.creative_id, x.features) for x in c.creatives or ()),
                    c.billing,
                )
                for c in req.candidates
            ]
        )
        try:  # the message names the model's own outputs (some named after their tasks)
            check_billing(
                ads,
                auction_outputs(predictor),
                model_outputs=predictor.outputs,
                hint=billing_hint(predictor),
            )
        except BillingError as exc:
            loc = ["body", "candidates", exc.index, "billing"]
            detail = [{"loc": loc, "msg": str(exc), "type": "value_error"}]
            raise HTTPException(422, detail) from exc
        scored: dict[str, Any] = {}

        def score(records: list[dict[str, Any]]) -> dict[str, Any]:
            probs = predictor.predict_outputs(records)
            check_finite(probs)
            domains.observe(predictor, records)
            click = click_output(predictor)
            scored["all"] = probs
            scored["auction"] = probs if click in (None, "pctr") else {"pctr": probs[click]}
            return scored["auction"]

        try:
            result = rank_ads(
                score,
                histories.clip(req.context, histories.limits(predictor.processor.schema)),
                ads,
                req.slots,
                req.reserve_price,
                reserve_ecpm=req.reserve_ecpm,
            )
        except RecordError as exc:
            raise rank_record_error(req, exc) from exc
        except SchemaError as exc:
            raise HTTPException(422, [{"loc": ["body"], "msg": str(exc)}]) from exc
        metrics.add_scored(result.scored_pairs)
        request_id = req.request_id or uuid.uuid4().hex
        if log is not None:
            log.submit(
                lambda: rank_record(
                    request_id=request_id,
                    timestamp=started,
                    model_version=predictor.version,
                    model=reference,
                    request=req,
                    ads=ads,
                    outputs=scored["all"],
                    auction_outputs=scored["auction"],
                    slots=result.slots,
                )
            )
        # the fields of RankResponse (the documented response_model), encoded by orjson
        return json_response(
            {
                "slots": [vars(s) for s in result.slots],
                "model_version": predictor.version,
                "model_reference": reference,
                "request_id": request_id,
                "scored_pairs": result.scored_pairs,
                "eligible_ads": result.eligible_ads,
            }
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        info, counters = _metric_values(holder, log)
        if follower is not None:
            counters |= follower.metric_values()
        counters |= histories.metric_values()
        counters |= domains.metric_values()
        text = metrics.render(info, counters)
        if worker_label:
            text = with_label(text, "worker", str(os.getpid()))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    if auth is not None:

        def reload(req: ReloadRequest | None = None) -> dict[str, Any]:
            t0 = time.perf_counter()
            serving = holder.current()[0].version
            try:
                old, new = holder.reload(req.reference if req else None)
            except OutsideModelRoot as exc:
                raise HTTPException(403, f"refused: {exc}") from exc
            except BadModelReference as exc:
                loc = ["body", "model" if req and req.model is not None else "run_dir"]
                raise HTTPException(422, [{"loc": loc, "msg": str(exc)}]) from exc
            except (ModelNotFound, SwapRefused) as exc:
                msg = f"reload refused, still serving {serving}: {exc}"
                raise HTTPException(409, msg) from exc
            return {
                "previous_version": old,
                "model_version": new,
                "model_reference": holder.reference,
                "run_dir": str(holder.current()[1]),
                "seconds": round(time.perf_counter() - t0, 4),
            }

        app.router.add_api_route(
            "/admin/reload",
            reload,
            methods=["POST"],
            dependencies=[Depends(auth)],
            route_class_override=JsonBodyRoute,
        )

    paths = {getattr(r, "path", "") for r in app.routes}
    app.add_middleware(ObserveAndLimit, metrics=metrics, max_body_bytes=max_body_bytes, paths=paths)
    # outermost: a refused body is read to its end (bounded) before the 413 goes out
    app.add_middleware(DrainRefusedBody, limit=DRAIN_FACTOR * max_body_bytes)
    return app


def _metric_values(
    holder: ModelHolder, log: ImpressionLog | None
) -> tuple[dict[str, str], dict[str, Any]]:
    predictor, run_dir = holder.current()
    manifest = predictor.artifact.manifest
    info = {
        "model": str(manifest.get("model")),
        "version": predictor.version,
        "reference": holder.reference,
        "dataset": str(manifest.get("dataset")),
        "run_dir": str(run_dir),
        "calibration": str(manifest.get("calibration_method") or "none"),
        "backend": predictor.backend,
    }
    counters: dict[str, Any] = {
        "adrank_model_reloads_total": ("counter", "Successful model reloads.", holder.reloads),
        "adrank_model_reloads_refused_total": (
            "counter",
            "Reloads refused (outside the root, not found, or stopped by the swap gate).",
            holder.refused,
        ),
    }
    if log is not None:
        stats = log.stats()
        counters |= {
            "adrank_impressions_logged_total": (
                "counter",
                "Impression records written.",
                stats["written"],
            ),
            "adrank_impressions_dropped_total": (
                "counter",
                "Impression records dropped, by reason.",
                stats["dropped"],
            ),
            "adrank_impressions_queued": (
                "gauge",
                "Impression records waiting to be written.",
                stats["queued"],
            ),
        }
    return info, counters


# ------------------------------------------------------------------------- runner -----
_ENV_CONFIG = "ADRANK_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker serving: ``create_app(**json($ADRANK_SERVE_CONFIG))``.
    A worker is a fresh process: its adrank log lines (swaps, refusals) go to stderr at the
    parent's level, marked with its pid."""
    config = json.loads(os.environ[_ENV_CONFIG])
    level = config.pop("log_level", None)
    if level is not None and not logging.getLogger().handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
        )
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
    """Run the service with uvicorn (blocks). Warns when ``host`` is not a loopback address.
    With ``workers > 1`` each worker process loads the model and writes its own impression
    files, and ``/admin/*`` is disabled (a reload would reach one worker only): restart the
    server to change the model, or follow a model store (``follow_store``), which every
    worker polls on its own (:mod:`adrank.serve.store_follower`)."""
    warn_if_exposed(host)
    if workers <= 1:
        app = create_app(run_dir, **app_options)
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    if app_options.pop("admin_token", None):
        logger.warning("--workers %d: /admin/* is disabled (it would reach one worker)", workers)
    # fail fast in the parent, with the model's own error
    create_app(run_dir, **{k: v for k, v in app_options.items() if k != "impression_log"})
    root_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    options = {**app_options, "run_dir": str(run_dir), "worker_label": True}
    options["log_level"] = root_level
    for key in ("model_root", "impression_log"):
        if options.get(key) is not None:
            options[key] = str(options[key])
    os.environ[_ENV_CONFIG] = json.dumps(options)
    config = uvicorn.Config(
        "adrank.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )
    _Supervisor(config, sockets=[_listening_socket(host, port)]).run()


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, closing its own copy of the listening socket before it
    stops the workers. Each worker closes its copy as it starts draining; with the parent's
    still open, the kernel kept accepting connections that no worker would serve and reset
    them when the parent exited (connection resets in a rolling deploy). Closed, new
    connections are refused, which a client or proxy retries safely, and the workers finish
    the requests they hold."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


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
