"""Load test of the HTTP ranking service: ``POST /v1/rank`` with 100 candidates.

Starts ``adrank.serve.app.serve`` in a subprocess on 127.0.0.1 (a free port), builds rank
requests from real frappe test rows (the user's context fields + 100 candidate items with
random bids), and for each concurrency level sends a bounded number of requests (stopping
early at a time limit) from ``c`` concurrent keep-alive connections. Reports p50/p90/p99
latency and requests/s, and writes ``benchmarks/results/load_test.{json,md}``.

The client is a minimal asyncio HTTP/1.1 client over pre-serialized bodies, so it costs far
less CPU than the server; it still shares the machine's cores with it.

    python -m benchmarks.load_test                       # trains a small frappe DeepFM first
    python -m benchmarks.load_test --run-dir RUN --requests 2000 --levels 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_results

HOST = "127.0.0.1"  # never anything else
CONTEXT_FIELDS = (
    "user",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "weather",
    "country",
    "city",
)
AD_FIELDS = ("item", "cost")


def train_small_frappe_run(run_dir: Path, data_dir: str | None, cache_dir: str | None) -> Path:
    """A DeepFM trained one epoch on frappe (the same setup as the integration tests)."""
    from adrank.config import RunConfig, TrainConfig
    from adrank.pipeline import train_run

    config = RunConfig(
        model="deepfm",
        dataset="frappe",
        params={"embedding_dim": 10, "hidden_units": [64, 64], "batch_norm": True},
        train=TrainConfig(max_epochs=1, embedding_regularizer=0.01, progress=False, seed=7),
    )
    train_run(config, run_dir, data_dir=data_dir, cache_dir=cache_dir)
    return run_dir


def build_bodies(data_dir: str | None, candidates: int, count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct /v1/rank bodies from raw frappe test rows."""
    from adrank.data.datasets import get_dataset, resolve_data_dir

    raw = get_dataset("frappe").build_splits(resolve_data_dir(data_dir))["test"]
    rows = raw.drop("label").to_dicts()
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        ctx_row = rows[int(rng.integers(len(rows)))]
        picks = rng.choice(len(rows), candidates, replace=False)
        cands = [
            {
                "ad_id": f"ad{int(i)}",
                "bid": round(float(rng.uniform(0.1, 2.0)), 4),
                "features": {k: rows[int(i)][k] for k in AD_FIELDS},
            }
            for i in picks
        ]
        body = {
            "context": {k: ctx_row[k] for k in CONTEXT_FIELDS},
            "candidates": cands,
            "slots": 5,
            "reserve_price": 0.05,
        }
        bodies.append(json.dumps(body).encode())
    return bodies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(
    run_dir: Path, port: int, workers: int, torch_threads: int, scoring_threads: int
) -> subprocess.Popen:
    code = (
        "from adrank.serve.app import serve; "
        f"serve({str(run_dir)!r}, {HOST!r}, {port}, workers={workers}, log_level='warning', "
        f"torch_threads={torch_threads}, scoring_threads={scoring_threads})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    wait_healthy(proc, port)
    return proc


def wait_healthy(proc: subprocess.Popen, port: int, seconds: float = 120.0) -> None:
    """Wait until the server in ``proc`` answers ``/healthz`` (terminate it on timeout)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"server did not become healthy within {seconds:g} s")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length -> (status, body)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + body)
    await writer.drain()
    return (await read_response(reader))[0]


async def run_level(
    port: int, bodies: list[bytes], concurrency: int, requests: int, max_seconds: float
) -> dict[str, Any]:
    """Send up to ``requests`` requests over ``concurrency`` connections (or stop at
    ``max_seconds``); returns latency percentiles (ms), requests/s and error count."""
    heads = [
        (
            f"POST /v1/rank HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        for b in bodies
    ]
    latencies: list[float] = []
    errors = 0
    issued = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        nonlocal issued, errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while issued < requests and time.perf_counter() < deadline:
                i = issued
                issued += 1
                t0 = time.perf_counter()
                status = await _request(
                    reader, writer, heads[i % len(heads)], bodies[i % len(bodies)]
                )
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="trained run (default: train one)")
    parser.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--scoring-threads", type=int, default=1, help="per worker")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--name", default="load_test", help="results file name")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="adrank-load-")
    run_dir = args.run_dir
    if run_dir is None:
        print("training a small frappe DeepFM (1 epoch) ...", flush=True)
        run_dir = train_small_frappe_run(Path(tmp.name) / "run", args.data_dir, args.cache_dir)
    bodies = build_bodies(args.data_dir, args.candidates, count=64)
    port = free_port()
    load_before = os.getloadavg()
    server = start_server(run_dir, port, args.workers, args.torch_threads, args.scoring_threads)
    levels = []
    try:
        asyncio.run(run_level(port, bodies, 1, args.warmup, 30.0))
        for c in (int(x) for x in args.levels.split(",")):
            res = asyncio.run(run_level(port, bodies, c, args.requests, args.max_seconds))
            levels.append(res)
            print(json.dumps(res), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp.cleanup()
    results = {
        "endpoint": "/v1/rank",
        "candidates": args.candidates,
        "slots": 5,
        "workers": args.workers,
        "torch_threads": args.torch_threads,
        "scoring_threads": args.scoring_threads,
        "requests_per_level": args.requests,
        "loadavg_before": [round(x, 2) for x in load_before],
        "note": args.note,
        "levels": levels,
    }
    rows = "\n".join(
        f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['p50_ms']} | "
        f"{r['p90_ms']} | {r['p99_ms']} | {r['requests_per_s']} |"
        for r in levels
    )
    markdown = (
        f"# /v1/rank load test ({args.candidates} candidates, {args.workers} uvicorn worker(s), "
        f"{args.torch_threads} torch thread(s), {args.scoring_threads} scoring thread(s) "
        "per worker)\n\n"
        f"{args.note}\n\nLoad average before start: {results['loadavg_before']}\n\n"
        "| concurrency | requests | errors | p50 ms | p90 ms | p99 ms | requests/s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
    )
    path = write_results(args.name, results, markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
