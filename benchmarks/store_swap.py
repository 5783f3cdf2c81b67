"""Load test of a server that follows a model store while versions are published.

A real ``adrank serve --store STORE --workers 2`` process on 127.0.0.1 serves version 1;
``concurrency`` keep-alive connections send ``POST /v1/rank`` without pause while versions
2..N are published (``adrank.serve.model_store.publish``) every ``--gap`` seconds:

* one version is **broken** (its ``model.pt`` cut in half, a corrupt upload): every worker
  must refuse it, keep serving, and count it;
* one version has a **grown vocabulary** (trained on more rows, so more users and items
  have ids); the versions after it derive from it;
* the others are the previous good version's weights plus N(0, 1e-3) noise, a synthetic
  stand-in for a retraining (labelled so in the results).

Every response's ``model_reference`` (NAME/VERSION) and latency is recorded, with the
worker (pid, learned from ``/healthz`` on the same keep-alive connection) that answered.
A monitor reads ``/healthz`` on fresh connections every 0.1 s, so each worker's serving
version is seen over time. The report shows failed requests, each worker's version
sequence (must only move forward, and only to good versions), and latency percentiles of
requests that overlap a swap window (a publish until every worker has moved to or refused
that version) against the rest (steady state). Latencies are taken on whatever machine
runs it: the load average is recorded at the start and end, and numbers taken under load
are marked so.

    python -m benchmarks.store_swap                     # trains two small frappe DeepFMs
    python -m benchmarks.store_swap --versions 10 --broken 5 --grown 7 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load_test import HOST, free_port, read_response, wait_healthy
from benchmarks.store_versions import plan_versions, train_frappe_pair

NAME = "default"
_REFERENCE = re.compile(rb'"model_reference"\s*:\s*"[^"/]+/(\d+)"')


# ------------------------------------------------------------------------- server -----
def start_server(
    store: Path, port: int, workers: int, poll_interval: float, log: Path
) -> subprocess.Popen:
    """``adrank serve --store`` in a subprocess (stdout and stderr to ``log``)."""
    cmd = [
        sys.executable,
        "-c",
        "from adrank.cli import run; run()",
        "serve",
        "--store",
        str(store),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--poll-interval",
        str(poll_interval),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, port, 180.0)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; its log ends: {log.read_text()[-2000:]}") from exc
    return proc


# ------------------------------------------------------------------------- client -----
async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    return await read_response(reader)


def _get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()


def _post(path: str, port: int, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _healthz(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        status, body = await _exchange(reader, writer, _get("/healthz", port))
    finally:
        writer.close()
    if status != 200:
        raise ConnectionError(f"/healthz answered {status}")
    return json.loads(body)


class Load:
    """The clients, the monitor and what they recorded."""

    def __init__(self, port: int, bodies: list[bytes], reconnect_every: int) -> None:
        self.port = port
        self.requests = [_post("/v1/rank", port, b) for b in bodies]
        self.reconnect_every = reconnect_every
        self.responses: list[tuple[int, int, int, float, float]] = []  # conn, pid, v, t0, t1
        self.failures: list[dict[str, Any]] = []
        self.health: list[tuple[float, int, int, int | None, tuple[int, ...]]] = []
        self.stop = asyncio.Event()
        self._connections = 0

    async def client(self, index: int) -> None:
        sent = index
        while not self.stop.is_set():
            self._connections += 1
            conn = self._connections
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
            except OSError as exc:
                self.failures.append({"t": time.time(), "error": f"connect: {exc}"})
                await asyncio.sleep(0.05)
                continue
            try:
                status, body = await _exchange(reader, writer, _get("/healthz", self.port))
                pid = int(json.loads(body)["store"]["pid"]) if status == 200 else -1
                for _ in range(self.reconnect_every):
                    if self.stop.is_set():
                        break
                    t0 = time.time()
                    status, body = await _exchange(
                        reader, writer, self.requests[sent % len(self.requests)]
                    )
                    t1 = time.time()
                    sent += 1
                    found = _REFERENCE.search(body)
                    if status != 200 or found is None:
                        self.failures.append({"t": t0, "status": status, "body": body[:300]})
                        continue
                    self.responses.append((conn, pid, int(found.group(1)), t0, t1))
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                self.failures.append({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"})
            finally:
                writer.close()

    async def monitor(self) -> None:
        while not self.stop.is_set():
            try:
                health = await _healthz(self.port)
                store = health["store"]
                refused = tuple(int(v) for v in store["refused"])
                self.health.append(
                    (time.time(), store["pid"], store["version"], store["latest"], refused)
                )
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                self.failures.append({"t": time.time(), "monitor": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(0.1)

    def pids(self) -> set[int]:
        """The workers seen, by the monitor or by the clients."""
        return {h[1] for h in self.health} | {r[1] for r in self.responses if r[1] > 0}


def settled_at(load: Load, publish: dict[str, Any], pids: set[int]) -> float | None:
    """When every worker, seen after the publish, had moved to its version (or past it; for
    a rollback: to exactly it), or for a broken one had refused it; None if never seen."""
    version = publish["version"]
    last: dict[int, tuple[int, tuple[int, ...]]] = {}
    for t, pid, serving, _, refused in load.health:
        if t < publish["at"]:
            continue
        last[pid] = (serving, refused)
        if pids <= last.keys() and all(
            (serving == version if publish.get("rollback") else serving >= version)
            if publish["good"]
            else version in refused
            for serving, refused in last.values()
        ):
            return t
    return None


async def drive(
    port: int,
    store: Path,
    plan: list[dict[str, Any]],
    bodies: list[bytes],
    *,
    concurrency: int,
    steady: float,
    gap: float,
    settle_timeout: float,
    reconnect_every: int,
    rollback_to: int | None = None,
) -> tuple[Load, list[dict[str, Any]], float]:
    """Run the clients while versions 2.. are published, then optionally roll back ->
    (load, publishes (the rollback last, marked), start time)."""
    from adrank.serve.model_store import publish, rollback

    load = Load(port, bodies, reconnect_every)
    start = time.time()
    tasks = [asyncio.create_task(load.client(i)) for i in range(concurrency)]
    tasks.append(asyncio.create_task(load.monitor()))
    await asyncio.sleep(steady)
    publishes = []
    for entry in plan[1:]:
        t = time.time()
        # check=False: the broken version stands for a corrupt upload, which the servers'
        # swap gate must refuse (adrank publish itself refuses it)
        await asyncio.to_thread(publish, entry["dir"], store, NAME, check=False)
        publishes.append({"version": entry["version"], "good": entry["good"], "at": t})
        await asyncio.sleep(gap)
    final = {"version": max(e["version"] for e in plan if e["good"]), "good": True}
    final["at"] = publishes[-1]["at"]
    deadline = time.time() + settle_timeout
    while settled_at(load, final, load.pids()) is None and time.time() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(steady)
    if rollback_to is not None:  # the one deliberate backward move
        back = {"version": rollback_to, "good": True, "at": time.time(), "rollback": True}
        await asyncio.to_thread(rollback, store, rollback_to, NAME, check=False)
        publishes.append(back)
        deadline = time.time() + settle_timeout
        while settled_at(load, back, load.pids()) is None and time.time() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(steady)
    load.stop.set()
    await asyncio.gather(*tasks)
    for p in publishes:
        p["settled"] = settled_at(load, p, load.pids())
    return load, publishes, start


# ------------------------------------------------------------------------ analysis ----
def _percentiles(ms: np.ndarray) -> dict[str, Any]:
    if ms.size == 0:
        return {"requests": 0}
    return {
        "requests": int(ms.size),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)},
        "max_ms": round(float(ms.max()), 2),
    }


def analyse(
    load: Load, publishes: list[dict[str, Any]], plan: list[dict[str, Any]], start: float
) -> dict[str, Any]:
    """Failures, per-worker version sequences and their checks (forward only until a
    rollback), the rollback's outcome, latency steady vs swaps."""
    bad = {e["version"] for e in plan if not e["good"]}
    back = next((p for p in publishes if p.get("rollback")), None)
    cut = back["at"] if back else float("inf")
    # per (connection, worker): a client connection that is re-opened (a keep-alive
    # timeout under load) may land on the other worker, which can still be a version behind
    per_connection: dict[tuple[int, int], list[int]] = {}
    first_seen: dict[int, dict[int, float]] = {}
    for conn, pid, version, t0, _ in load.responses:
        if t0 < cut:
            per_connection.setdefault((conn, pid), []).append(version)
            first_seen.setdefault(pid, {}).setdefault(version, t0)
    monitor: dict[int, list[int]] = {}
    for t, pid, serving, _, _ in load.health:
        seq = monitor.setdefault(pid, [])
        if t < cut and (not seq or seq[-1] != serving):
            seq.append(serving)
    workers = {}
    for pid in sorted(set(monitor) | set(first_seen)):
        answered = [v for v, _ in sorted(first_seen.get(pid, {}).items(), key=lambda kv: kv[1])]
        refused = sorted({v for _, p, _, _, r in load.health if p == pid for v in r})
        workers[str(pid)] = {
            "versions_answered": answered,
            "versions_seen_by_monitor": monitor.get(pid, []),
            "refused": refused,
            "requests": sum(1 for _, p, *_ in load.responses if p == pid),
        }
    forward = all(seq == sorted(seq) for seq in per_connection.values()) and all(
        w["versions_answered"] == sorted(w["versions_answered"])
        and w["versions_seen_by_monitor"] == sorted(w["versions_seen_by_monitor"])
        for w in workers.values()
    )
    served_bad = sorted({r[2] for r in load.responses} & bad)
    rolled = None
    if back is not None:
        done = back["settled"]
        after = {r[2] for r in load.responses if done is not None and r[3] > done}
        final = {pid: serving for _, pid, serving, _, _ in load.health}
        rolled = {
            "to": back["version"],
            "settled_after_s": None if done is None else round(done - back["at"], 2),
            "versions_answered_after": sorted(after),
            "every_worker_followed": done is not None
            and set(final.values()) == {back["version"]}
            and after <= {back["version"]},
        }
    windows = [
        (p["at"], (p["settled"] or p["at"] + 10.0) + 0.5) for p in publishes
    ]  # half a second after the last worker settled still counts as the swap's
    lat = np.array([(t1 - t0) * 1000 for *_, t0, t1 in load.responses])
    in_swap = np.array(
        [any(t0 < b and t1 > a for a, b in windows) for *_, t0, t1 in load.responses], bool
    )
    warm = np.array([t0 >= start + 1.0 for *_, t0, _ in load.responses], bool)
    return {
        "requests": len(load.responses),
        "failed": len(load.failures),
        "failures": [{k: str(v) for k, v in f.items()} for f in load.failures[:20]],
        "workers": workers,
        "connections": len(per_connection),
        "forward_only": forward,
        "broken_versions": sorted(bad),
        "broken_versions_served": served_bad,
        "every_worker_refused_the_broken": all(bad <= set(w["refused"]) for w in workers.values()),
        "rollback": rolled,
        "swap_windows_s": [
            {
                "version": p["version"],
                "good": p["good"],
                "settled_after_s": None
                if p["settled"] is None
                else round(p["settled"] - p["at"], 2),
            }
            for p in publishes
            if not p.get("rollback")
        ],
        "latency_steady": _percentiles(lat[warm & ~in_swap]) if lat.size else {},
        "latency_during_swaps": _percentiles(lat[warm & in_swap]) if lat.size else {},
    }


def run_store_swap(
    base: Path,
    grown: Path,
    work: Path,
    bodies: list[bytes],
    *,
    versions: int = 10,
    broken_at: int = 5,
    grown_at: int = 7,
    workers: int = 2,
    concurrency: int = 8,
    poll_interval: float = 0.5,
    steady: float = 8.0,
    gap: float = 4.0,
    settle_timeout: float = 60.0,
    reconnect_every: int = 40,
    rollback_to: int | None = None,
) -> dict[str, Any]:
    """The whole test in ``work`` (a store, the version runs, the server's log) -> results."""
    from adrank.serve.model_store import publish

    if (rollback_to is not None and not 1 <= rollback_to < versions) or rollback_to == broken_at:
        raise ValueError(f"roll back to a good version below {versions}, not {rollback_to}")
    plan = plan_versions(base, grown, work / "runs", versions, broken_at, grown_at)
    store = work / "store"
    publish(plan[0]["dir"], store, NAME)
    port = free_port()
    load_start = os.getloadavg()
    server = start_server(store, port, workers, poll_interval, work / "server.log")
    try:
        load, publishes, start = asyncio.run(
            drive(
                port,
                store,
                plan,
                bodies,
                concurrency=concurrency,
                steady=steady,
                gap=gap,
                settle_timeout=settle_timeout,
                reconnect_every=reconnect_every,
                rollback_to=rollback_to,
            )
        )
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    log = (work / "server.log").read_text(errors="replace")
    results = analyse(load, publishes, plan, start)
    results |= {
        "setup": {
            "versions": versions,
            "broken_at": broken_at,
            "grown_at": grown_at,
            "workers": workers,
            "concurrency": concurrency,
            "poll_interval_s": poll_interval,
            "steady_s": steady,
            "gap_s": gap,
            "rollback_to": rollback_to,
        },
        "plan": [{k: v for k, v in e.items() if k != "dir"} for e in plan],
        "refusals_logged": log.count(f"store: refused {NAME}/"),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "cpus": os.cpu_count(),
    }
    return results


# -------------------------------------------------------------------------- report ----
def render(results: dict[str, Any]) -> str:
    setup = results["setup"]
    busy = max(results["load_average"]["start"][0], results["load_average"]["end"][0])
    under_load = busy > (results["cpus"] or 1)
    mark = " (under load)" if under_load else ""
    lines = [
        "# Following a model store under load",
        "",
        f"`python -m benchmarks.store_swap`: a real `adrank serve --store` with "
        f"{setup['workers']} workers on 127.0.0.1 (poll interval {setup['poll_interval_s']} s), "
        f"{setup['concurrency']} keep-alive connections sending `POST /v1/rank` without pause "
        f"while versions 2..{setup['versions']} were published every {setup['gap_s']} s.",
        "",
        f"Load average (1/5/15 min) at the start {results['load_average']['start']}, at the end "
        f"{results['load_average']['end']}, on {results['cpus']} CPUs"
        + (
            ": **taken under load** (other processes shared the cores); the latencies are "
            "not a result, re-time them on a quiet machine."
            if under_load
            else "."
        ),
        "",
        "| check | result |",
        "|---|---|",
        f"| requests answered | {results['requests']:,} |",
        f"| failed requests | **{results['failed']}** |",
        f"| every worker's versions only moved forward | {results['forward_only']} |",
        f"| broken version(s) {results['broken_versions']} served | "
        f"{results['broken_versions_served'] or 'never'} |",
        f"| every worker refused the broken version | {results['every_worker_refused_the_broken']}"
        f" (refusals logged: {results['refusals_logged']}) |",
    ]
    back = results.get("rollback")
    if back:
        lines.append(
            f"| then `adrank rollback --to {back['to']}`: every worker followed it (the one "
            f"deliberate backward move) | {back['every_worker_followed']} (after "
            f"{back['settled_after_s']} s; versions answered since: "
            f"{back['versions_answered_after']}) |"
        )
    lines += [
        "",
        "Versions (the synthetic retrainings are the previous good weights plus noise, not "
        "trained models):",
        "",
        "| version | what | vocabulary ids (all fields) | settled on every worker after (s) |",
        "|---|---|---|---|",
    ]
    settled = {w["version"]: w["settled_after_s"] for w in results["swap_windows_s"]}
    first = results["plan"][0]["vocabulary"]
    for entry in results["plan"]:
        vocab = entry["vocabulary"]
        grew = [f"{k} {first.get(k, 0):,} → {n:,}" for k, n in vocab.items() if n > first.get(k, 0)]
        lines.append(
            f"| {entry['version']} | {entry['kind']} | {sum(vocab.values()):,}"
            + (f" ({', '.join(grew)})" if grew else "")
            + f" | {settled.get(entry['version'], 'start')} |"
        )
    lines += [
        "",
        "Each worker (pid): the versions it answered `/v1/rank` with, in the order of their "
        "first response (a worker that no connection reached before a swap starts later), "
        "the versions its `/healthz` showed over time, and the versions it refused"
        + (" (until the rollback)" if back else "")
        + ":",
        "",
        "| worker | requests | versions answered | versions in /healthz | refused |",
        "|---|---|---|---|---|",
    ]
    for pid, w in results["workers"].items():
        answered = " → ".join(str(v) for v in w["versions_answered"])
        seen = " → ".join(str(v) for v in w["versions_seen_by_monitor"])
        lines.append(f"| {pid} | {w['requests']:,} | {answered} | {seen} | {w['refused']} |")
    lines += [
        "",
        f"Latency of `/v1/rank`{mark} (ms; a request counts as during a swap when it overlaps "
        "a publish until half a second after every worker had moved to or refused it):",
        "",
        "| phase | requests | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (
        ("steady state", "latency_steady"),
        ("during swaps", "latency_during_swaps"),
    ):
        p = results[key]
        if p.get("requests"):
            lines.append(
                f"| {label} | {p['requests']:,} | {p['p50_ms']} | {p['p90_ms']} | "
                f"{p['p99_ms']} | {p['max_ms']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    parser.add_argument("--work-dir", type=Path, help="keeps the trained runs for re-runs")
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--broken", type=int, default=5)
    parser.add_argument("--grown", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--steady", type=float, default=8.0, help="seconds before and after")
    parser.add_argument("--gap", type=float, default=4.0, help="seconds between publishes")
    parser.add_argument(
        "--rollback-to", type=int, default=8, help="roll back at the end (0: don't)"
    )
    parser.add_argument("--output", default="stream/store_swap")
    args = parser.parse_args(argv)

    from adrank.bench.runner import claim_benchmark_dir
    from benchmarks.common import RESULTS_DIR, write_results
    from benchmarks.load_test import build_bodies

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="adrank-store-swap-"))
    work.mkdir(parents=True, exist_ok=True)
    base, grown = train_frappe_pair(work / "trained", args.data_dir)
    bodies = build_bodies(args.data_dir, args.candidates, 200)
    results = run_store_swap(
        base,
        grown,
        Path(tempfile.mkdtemp(prefix="swap-", dir=work)),  # a fresh store for every run
        bodies,
        versions=args.versions,
        broken_at=args.broken,
        grown_at=args.grown,
        workers=args.workers,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        steady=args.steady,
        gap=args.gap,
        rollback_to=args.rollback_to or None,
    )
    claim_benchmark_dir((RESULTS_DIR / args.output).parent)
    path = write_results(args.output, results, render(results))
    print(render(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
