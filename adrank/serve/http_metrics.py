"""Prometheus metrics and the request-size limit of the HTTP service.

:class:`Metrics` counts requests by method, path and status, keeps a latency histogram per
path, and renders them (with the model info, reloads and the impression log's counters) in
Prometheus text format 0.0.4. :class:`ObserveAndLimit` is the outer ASGI middleware that
records every request and refuses bodies over the limit with 413.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio

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


def with_label(text: str, name: str, value: str) -> str:
    """The exposition ``text`` with ``name="value"`` added to every sample (comment lines
    unchanged): a multi-worker server's ``worker`` label."""
    label = f'{name}="{_label(value)}"'
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            out.append(line)
            continue
        end = min(i for i in (line.find("{"), line.find(" "), len(line)) if i >= 0)
        metric, rest = line[:end], line[end:]
        if not rest.startswith("{"):
            rest = "{}" + rest
        comma = "" if rest[1:2] == "}" else ","
        out.append(f"{metric}{{{label}{comma}{rest[1:]}")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


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

    def render(
        self,
        info: Mapping[str, str],
        counters: Mapping[str, tuple[str, str, float | Mapping[str, float]]],
    ) -> str:
        """The text exposition: the request counters and histograms, ``adrank_model_info``
        with ``info`` as labels, and ``counters``: name -> (type, help, value), where a
        mapping value is one sample per ``reason`` label."""
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
        labels = ",".join(f'{k}="{_label(v)}"' for k, v in info.items())
        lines += [
            "# HELP adrank_model_info The model being served (value is always 1).",
            "# TYPE adrank_model_info gauge",
            f"adrank_model_info{{{labels}}} 1",
            "# HELP adrank_scored_records_total Records scored by the model.",
            "# TYPE adrank_scored_records_total counter",
            f"adrank_scored_records_total {scored}",
        ]
        for name, (kind, text, value) in counters.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if isinstance(value, Mapping):
                lines += [f'{name}{{reason="{_label(k)}"}} {v:g}' for k, v in value.items()]
            else:
                lines.append(f"{name} {value:g}")
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
            {
                "detail": f"request body exceeds the limit of {self.max_body_bytes} bytes "
                "(the server's `adrank serve --max-body-bytes`)"
            }
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


#: How much of a refused (413) body the server reads and discards before it answers, as a
#: multiple of ``max_body_bytes``, and for how long at most.
DRAIN_FACTOR = 4
DRAIN_SECONDS = 10.0


class DrainRefusedBody:
    """Outer ASGI middleware: before a 413 goes out for a body that was not read to its
    end, read and discard the rest of it, up to ``limit`` bytes and ``seconds``.

    :class:`~adrank.serve.http_metrics.ObserveAndLimit` answers 413 as soon as a body is
    known to be too large, without reading the rest. uvicorn then closes the connection of
    a client that asked to close it (``Connection: close``, as Python's urllib sends), with
    the unread body still in the socket's buffer: the kernel answers with a reset, and a
    client that writes its whole body before reading the response (urllib again) gets
    ``BrokenPipeError`` or ``ConnectionResetError`` instead of the 413. Read to its end,
    the body leaves nothing unread, and every client sees the 413.

    The drain is bounded: a body declared (``Content-Length``) larger than the bound is
    not read at all, a streamed (chunked) one is read up to the bound, and the 413 then
    goes out as before (such a client may still see a reset). A client that sent
    ``Expect: 100-continue`` has not sent its body: it gets the 413 at once, never a
    ``100 Continue``. Other requests pass through untouched."""

    def __init__(self, app: Any, limit: int, seconds: float = DRAIN_SECONDS) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        ended = False

        async def receive_tracked() -> Any:
            nonlocal ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                ended = True
            return message

        async def send_after_drain(message: Any) -> None:
            if not ended and message["type"] == "http.response.start" and message["status"] == 413:
                await self._drain(scope, receive_tracked, lambda: ended)
            await send(message)

        await self.app(scope, receive_tracked, send_after_drain)

    async def _drain(self, scope: Any, receive: Any, ended: Any) -> None:
        headers = dict(scope.get("headers") or ())
        if b"100-continue" in headers.get(b"expect", b"").lower():
            return  # the client waits for our answer before sending the body
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return  # more than we would read: answer now
        read = 0
        with anyio.move_on_after(self.seconds):
            while not ended() and read <= self.limit:
                read += len((await receive()).get("body", b""))
