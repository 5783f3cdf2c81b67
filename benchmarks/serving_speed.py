"""Serving speed of ``POST /v1/rank`` (100 candidates) with a compiled load generator.

For each model (DeepFM and FinalMLP on frappe by default, trained one epoch with their BARS
configs unless run directories are given) and each scoring backend (eager torch, ONNX
Runtime), starts one server worker pinned to one core (``taskset``) and runs ``wrk``
pinned to the other at each concurrency level over keep-alive connections, rotating 64
distinct request bodies built from real frappe test rows. Reports p50/p90/p99 latency,
requests/s, non-2xx responses and the **server's CPU time per request** (user + system CPU
of the server process and its children, from ``/proc``, over the level, divided by the
requests completed), which is what the machine pays per request independently of the
client. Writes ``benchmarks/results/load_test.{json,md}``.

    python -m benchmarks.serving_speed                 # trains the two runs first
    python -m benchmarks.serving_speed --run deepfm=RUN --backends torch,onnx --seconds 10

Needs ``wrk`` (Debian: ``apt-get install wrk``) and ``taskset``; without ``wrk`` use
``python -m benchmarks.load_test`` (an asyncio client sharing the machine's cores).
Timings are only meaningful on a quiet machine: the load average is recorded with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from benchmarks.load_test import HOST, build_bodies, free_port, wait_healthy

_LUA = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/v1/rank", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format(
    "ADRANK {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"max_us\\": %%d, \\"socket_errors\\": %%d, \\"status_errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / tick  # utime, stime
        todo.extend(children.get(p, []))
    return total


def train_run(model: str, out: Path, data_dir: str | None) -> Path:
    """``model`` on frappe with its BARS config, one epoch, one thread."""
    from adrank.config import RunConfig
    from adrank.pipeline import train_run as train

    config = RunConfig.load(Path("configs/models/frappe") / f"{model}.yaml").with_overrides(
        ["train.max_epochs=1", "train.num_threads=1", "train.progress=false"]
    )
    train(config, out, data_dir=data_dir)
    return out


def ensure_onnx(run_dir: Path, data_dir: str | None) -> None:
    from adrank.serve.export import EXPORT_FILES, export

    manifest = json.loads((run_dir / "manifest.json").read_text())
    if (
        "onnx" not in (manifest.get("exports") or {})
        or not (run_dir / EXPORT_FILES["onnx"]).exists()
    ):
        export(run_dir, "onnx", data_dir=Path(data_dir) if data_dir else None)


def start_pinned_server(run_dir: Path, port: int, backend: str, core: int) -> subprocess.Popen:
    code = (
        "from adrank.serve.app import serve; "
        f"serve({str(run_dir)!r}, {HOST!r}, {port}, workers=1, log_level='warning', "
        f"torch_threads=1, scoring_threads=1, backend={backend!r})"
    )
    proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", code])
    wait_healthy(proc, port)
    return proc


def run_wrk(port: int, script: Path, concurrency: int, seconds: float, core: int) -> dict:
    cmd = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("ADRANK "))
    return json.loads(line[len("ADRANK ") :])


def measure(
    run_dir: Path, backend: str, script: Path, levels: list[int], seconds: float, cores: tuple
) -> list[dict[str, Any]]:
    port = free_port()
    server = start_pinned_server(run_dir, port, backend, cores[0])
    rows = []
    try:
        run_wrk(port, script, 1, 3, cores[1])  # warm-up (first requests, allocator)
        for c in levels:
            load = os.getloadavg()[0]
            cpu0 = _cpu_seconds(server.pid)
            res = run_wrk(port, script, c, seconds, cores[1])
            cpu = _cpu_seconds(server.pid) - cpu0
            n = max(res["requests"], 1)
            rows.append(
                {
                    "backend": backend,
                    "concurrency": c,
                    "requests": res["requests"],
                    "errors": res["socket_errors"] + res["status_errors"],
                    "requests_per_s": round(res["requests"] / (res["duration_us"] / 1e6), 1),
                    "p50_ms": res["p50_us"] / 1000,
                    "p90_ms": res["p90_us"] / 1000,
                    "p99_ms": res["p99_us"] / 1000,
                    "server_cpu_ms_per_request": round(1000 * cpu / n, 3),
                    "loadavg_1m_before": round(load, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="deepfm,finalmlp")
    parser.add_argument("--run", action="append", default=[], help="MODEL=RUN_DIR (repeat)")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--cores", default="0,1", help="server core, client core")
    parser.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--name", default="load_test", help="results file name")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("needs wrk and taskset (apt-get install wrk util-linux)")
    cores = tuple(int(x) for x in args.cores.split(","))
    runs = dict(item.split("=", 1) for item in args.run)
    tmp = tempfile.TemporaryDirectory(prefix="adrank-speed-")
    bodies_file = Path(tmp.name) / "bodies.jsonl"
    bodies = build_bodies(args.data_dir, args.candidates, count=64)
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    script = Path(tmp.name) / "rank.lua"
    script.write_text(_LUA % {"bodies": bodies_file})
    results: list[dict[str, Any]] = []
    started = time.time()
    try:
        for model in args.models.split(","):
            run_dir = Path(runs[model]) if model in runs else None
            if run_dir is None:
                print(f"training {model} on frappe (1 epoch) ...", flush=True)
                run_dir = train_run(model, Path(tmp.name) / model, args.data_dir)
            for backend in args.backends.split(","):
                if backend == "onnx":
                    ensure_onnx(run_dir, args.data_dir)
                levels = [int(x) for x in args.levels.split(",")]
                for row in measure(run_dir, backend, script, levels, args.seconds, cores):
                    results.append({"model": model, **row})
    finally:
        tmp.cleanup()
    write_report(args, results, started)


def server_stack() -> dict[str, str]:
    """What uvicorn serves with: its HTTP parser and event loop ("auto" picks httptools and
    uvloop when they are installed, as the ``serve`` extra does)."""
    import importlib.metadata as md
    import importlib.util

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    return {
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }


def write_report(args: argparse.Namespace, results: list[dict[str, Any]], started: float) -> None:
    stack = server_stack()
    header = (
        "| model | backend | concurrency | requests | errors | p50 ms | p90 ms | p99 ms | "
        "requests/s | server CPU ms/request | load avg |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = "".join(
        f"| {r['model']} | {r['backend']} | {r['concurrency']} | {r['requests']} | "
        f"{r['errors']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['requests_per_s']} | {r['server_cpu_ms_per_request']:.3f} | "
        f"{r['loadavg_1m_before']} |\n"
        for r in results
    )
    markdown = (
        f"# /v1/rank serving speed ({args.candidates} candidates, wrk)\n\n"
        "One uvicorn worker (1 torch thread, 1 scoring thread) pinned to core "
        f"{args.cores.split(',')[0]}, `wrk -t1` pinned to core {args.cores.split(',')[1]}, "
        f"(uvicorn {stack['uvicorn']}, {stack['http']} parser, {stack['loop']} loop, FastAPI "
        f"{stack['fastapi']}), {args.seconds:g} s per level after a 3 s warm-up; 64 distinct "
        "bodies from frappe "
        "test rows. Server CPU ms/request = the server process's user + system CPU over the "
        "level / requests completed. `load avg` is the 1-minute load average before each "
        "level (a quiet 2-core machine reads about 1 while the server and wrk run). "
        f"Command: `python -m benchmarks.serving_speed`.\n\n{args.note}\n\n{header}{rows}"
    )
    payload = {
        "endpoint": "/v1/rank",
        "client": "wrk",
        "candidates": args.candidates,
        "seconds_per_level": args.seconds,
        "server": stack,
        "started": started,
        "note": args.note,
        "rows": results,
    }
    path = write_results(args.name, payload, markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
