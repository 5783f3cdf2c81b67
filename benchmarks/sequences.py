"""Long-history cost of the sequence models (``python -m benchmarks sequences``).

On **synthetic** histories (random item ids; labelled synthetic everywhere, never an
accuracy claim), for each sequence model and history length L (default 50, 500, 5,000 and
20,000), one subprocess per cell measures:

* training samples/s (Adam steps on batches of ``--batch`` users, after a warm-up step);
* the process's peak resident memory (MiB);
* the latency of one request: one user with a history of L items and 100 candidates, scored
  in process through the model's user-once API (``encode_user`` then ``score``), median of
  ``--repeats``.

The same cell then saves the model it trained as a servable run directory (manifest,
processor, weights: the synthetic schema ``synthetic_long_history``, whose ``user`` and
``item`` ids are hashed into exactly the vocabularies the model was built with, and a
history ``hist_item`` of ``max_len`` L), and the latency **over HTTP** is measured apart:
a server subprocess on 127.0.0.1 (``adrank.serve.app.serve``, one worker, the same torch
threads, a body limit large enough for the history) answers ``POST /v1/rank`` with the same
kind of request, the history sent as a list in the request context and the 100 candidates
ranked into 100 slots, from a synchronous keep-alive ``http.client`` connection: one
warm-up, then the median of ``--repeats`` (request sent to response read). Each response
must be a 200 ranking exactly the 100 candidates, or the HTTP cell fails with the reason.
The server's peak RSS is recorded too.

Per-model caps on L (from the maths and the code: BST is O(L²) per candidate, DIEN and DMIN
step through the history in Python) and a per-cell time limit (in process and over HTTP
each) keep the run bounded; a cell over a cap, over the time limit or out of memory is
**reported as skipped with the reason**, never hidden. The report gives each model's
latency ratio L = 5,000 over L = 50 in process and over HTTP (the issue's aim: SDIM within
2x).

Timings are only meaningful on a quiet machine: the report records the load average.

    python -m benchmarks sequences [--lengths 50,500,5000,20000] [--models din,...]
        [--batch 256] [--steps 5] [--repeats 5] [--threads 2] [--cell-timeout 300]
        [--no-http] [--output DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("din", "dien", "bst", "dmin", "sim", "eta", "sdim", "twin", "qin")
#: longest history each model is run at (beyond it the cell is skipped, with this reason)
CAPS = {
    "bst": (5_000, "O(L^2) self-attention per candidate"),
    "dien": (500, "GRU/AUGRU step through the history in Python"),
    "dmin": (500, "step-wise refiner/extractor in Python"),
}
VOCAB = 100_000
USERS = 10_000
CANDIDATES = 100
EMBEDDING_DIM = 16
SCHEMA_NAME = "synthetic_long_history"
RESERVED_IDS = 2  # 0 = padding, 1 = out of vocabulary: hashed ids start at 2


def feature_map(length: int):
    from adrank.data.feature_map import FeatureMap, FieldInfo

    fields = (
        FieldInfo("user", "categorical", USERS, 0, "user"),
        FieldInfo("item", "categorical", VOCAB, 0, "item"),
        FieldInfo("hist_item", "sequence", VOCAB, length, "item", target="item"),
    )
    return FeatureMap(fields=fields, labels=("click",))


def schema_dict(length: int) -> dict[str, Any]:
    """The raw schema of the served run: hashed ids, so the processor's vocabularies are
    exactly :func:`feature_map`'s sizes (``hash_buckets + 2``) without fitting 100,000 ids."""
    return {
        "name": SCHEMA_NAME,
        "tasks": ["click"],
        "features": [
            {"name": "user", "type": "categorical", "hash_buckets": USERS - RESERVED_IDS},
            {"name": "item", "type": "categorical", "hash_buckets": VOCAB - RESERVED_IDS},
            {"name": "hist_item", "type": "sequence", "max_len": length,
             "share_vocab_with": "item", "target": "item"},
        ],
    }  # fmt: skip


def synthetic_batch(rows: int, length: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    hist = torch.randint(RESERVED_IDS, VOCAB, (rows, length), generator=gen)
    return {
        "user": torch.randint(RESERVED_IDS, USERS, (rows,), generator=gen),
        "item": torch.randint(RESERVED_IDS, VOCAB, (rows,), generator=gen),
        "hist_item": hist,
    }, torch.randint(0, 2, (rows,), generator=gen).float()


def measure_cell(
    model_name: str, length: int, args: argparse.Namespace, run_dir: Path | None = None
) -> dict:
    """One (model, L) cell, in this process (run it in a subprocess for its own peak RSS).
    With ``run_dir``, the trained model is then saved there as a servable run."""
    import torch

    from adrank.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, feature_map(length), embedding_dim=EMBEDDING_DIM)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    features, labels = synthetic_batch(args.batch, length, seed=1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(features)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        optimizer.step()

    model.train()
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    train_s = time.perf_counter() - start
    model.eval()
    user, _ = synthetic_batch(1, length, seed=2)
    items = torch.randint(
        RESERVED_IDS, VOCAB, (CANDIDATES,), generator=torch.Generator().manual_seed(3)
    )
    latencies = []
    with torch.inference_mode():
        model.score_candidates(user, {"item": items})  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.score_candidates(user, {"item": items})
            latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    result = {
        "train_samples_per_s": args.batch * args.steps / train_s,
        "latency_ms": latencies[len(latencies) // 2],
        # measured before the run is written (which imports the data stack)
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if run_dir is not None:
        write_run(model, model_name, length, args, run_dir)
    return result


def write_run(model: Any, model_name: str, length: int, args: argparse.Namespace, out: Path):
    """Save ``model`` (as trained above) as a run directory the server loads: the processor
    of :func:`schema_dict` fitted on a few synthetic rows (hashed ids need no vocabulary),
    its feature map (checked equal to the one the model was built with) and the weights."""
    import polars as pl

    from adrank.artifact import write_artifact
    from adrank.config import RunConfig, TrainConfig
    from adrank.data.processor import FeatureProcessor
    from adrank.data.schema import Schema

    frame = pl.DataFrame(
        {"click": [0, 1], "user": ["u1", "u2"], "item": ["i1", "i2"], "hist_item": ["i1|i2", ""]}
    )
    processor = FeatureProcessor(Schema.from_dict(schema_dict(length))).fit(frame)
    served = processor.feature_map()
    if served.fields != feature_map(length).fields:
        raise RuntimeError("the synthetic schema's feature map differs from the benchmark's")
    processor.save(out.parent / f"{out.name}.processor")
    config = RunConfig(
        model=model_name,
        params={"embedding_dim": EMBEDDING_DIM},
        train=TrainConfig(batch_size=args.batch, num_threads=args.threads, progress=False),
        notes=f"synthetic: benchmarks.sequences, {args.steps + 1} Adam steps on random ids",
    )
    metrics = {"synthetic": True, "adam_steps": args.steps + 1, "note": "no evaluation"}
    write_artifact(
        out,
        config=config,
        processor_dir=out.parent / f"{out.name}.processor",
        feature_map=served,
        model=model,
        metrics=metrics,
        extra={"synthetic": True},
    )


def rank_body(length: int, seed: int = 0) -> bytes:
    """One ``/v1/rank`` body: a synthetic user with ``length`` history items (a list,
    oldest first) and :data:`CANDIDATES` candidate items, all ranked (100 slots)."""
    rng = random.Random(seed)
    context = {
        "user": f"u{rng.randrange(USERS)}",
        "hist_item": [f"i{rng.randrange(VOCAB)}" for _ in range(length)],
    }
    candidates = [
        {"ad_id": f"ad{k}", "bid": round(rng.uniform(0.1, 2.0), 4),
         "features": {"item": f"i{rng.randrange(VOCAB)}"}}
        for k in range(CANDIDATES)
    ]  # fmt: skip
    body = {"context": context, "candidates": candidates, "slots": CANDIDATES}
    return json.dumps(body, separators=(",", ":")).encode()


def check_response(status: int, payload: bytes) -> str | None:
    """Why a response is not a 200 ranking all the candidates (None when it is)."""
    if status != 200:
        return f"HTTP {status}: {payload[:200].decode(errors='replace')}"
    got = json.loads(payload)
    ranked = {s["ad_id"] for s in got["slots"]}
    if got.get("scored_pairs") != CANDIDATES or ranked != {f"ad{k}" for k in range(CANDIDATES)}:
        return f"ranked {len(ranked)} ads, scored {got.get('scored_pairs')} pairs, not {CANDIDATES}"
    return None


def _server_peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_http(run_dir: Path, length: int, args: argparse.Namespace) -> dict:
    """Serve ``run_dir`` on 127.0.0.1 in a subprocess; latency of one ``/v1/rank`` request
    (warm-up, then the median of ``--repeats``) over one keep-alive connection."""
    from benchmarks.load_test import HOST, free_port, wait_healthy

    deadline = time.monotonic() + args.cell_timeout
    body = rank_body(length)
    limit = max(4 * 1024 * 1024, 2 * len(body))  # 20,000 items are ~0.2 MB
    port = free_port()
    code = (
        "from adrank.serve.app import serve; "
        f"serve({str(run_dir)!r}, {HOST!r}, {port}, workers=1, log_level='warning', "
        f"torch_threads={args.threads}, scoring_threads=1, max_body_bytes={limit})"
    )
    log = run_dir.parent / f"{run_dir.name}.server.log"
    with log.open("wb") as err:
        server = subprocess.Popen([sys.executable, "-c", code], stdout=err, stderr=err)
    try:
        try:
            wait_healthy(server, port, seconds=max(deadline - time.monotonic(), 1.0))
        except RuntimeError as exc:
            tail = (log.read_text(errors="replace").strip().splitlines() or [""])[-1]
            return {"skipped": f"server failed: {exc}; {tail[:200]}".rstrip("; ")}
        conn = http.client.HTTPConnection(HOST, port, timeout=max(deadline - time.monotonic(), 1))
        headers = {"Content-Type": "application/json"}
        latencies = []
        try:
            for i in range(args.repeats + 1):  # the first is the warm-up
                if time.monotonic() > deadline:
                    return {"skipped": f"over the {args.cell_timeout} s cell time limit (HTTP)"}
                t0 = time.perf_counter()
                conn.request("POST", "/v1/rank", body=body, headers=headers)
                res = conn.getresponse()
                payload = res.read()
                elapsed = (time.perf_counter() - t0) * 1000
                why = check_response(res.status, payload)
                if why is not None:
                    return {"skipped": f"failed: {why}"}
                if i:
                    latencies.append(elapsed)
        except TimeoutError:
            return {"skipped": f"over the {args.cell_timeout} s cell time limit (HTTP)"}
        except (OSError, http.client.HTTPException) as exc:  # the server died mid-request
            return {"skipped": f"failed: {type(exc).__name__}: {exc}"[:200]}
        finally:
            conn.close()
        latencies.sort()
        return {
            "latency_ms": latencies[len(latencies) // 2],
            "server_peak_rss_mib": _server_peak_rss_mib(server.pid),
            "request_bytes": len(body),
            "max_body_bytes": limit,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_cell(model_name: str, length: int, args: argparse.Namespace) -> dict:
    cap = CAPS.get(model_name)
    if cap is not None and length > cap[0]:
        return {"skipped": f"L > {cap[0]:,}: {cap[1]}"}
    with tempfile.TemporaryDirectory(prefix="adrank-seq-") as tmp:
        run_dir = Path(tmp) / f"{model_name}_{length}"
        cmd = [sys.executable, "-m", "benchmarks.sequences", "--cell", model_name, str(length),
               "--batch", str(args.batch), "--steps", str(args.steps),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
        if args.http:
            cmd += ["--run-dir", str(run_dir)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cell_timeout)
        except subprocess.TimeoutExpired:
            return {"skipped": f"over the {args.cell_timeout} s cell time limit"}
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            if not lines and done.returncode == -9:  # SIGKILL, silent: the kernel's OOM killer
                why = "killed (SIGKILL, most likely out of memory)"
            elif not lines:
                why = f"exit status {done.returncode}, no message"
            else:
                why = "out of memory" if "memory" in lines[-1].lower() else lines[-1][:200]
            return {"skipped": f"failed: {why}"}
        cell = json.loads(done.stdout.strip().splitlines()[-1])
        if args.http:
            cell["http"] = measure_http(run_dir, length, args)
        else:
            cell["http"] = {"skipped": "not measured (--no-http)"}
        return cell


def _ratio(cells: dict, key: str) -> str:
    lo, hi = cells.get("50", {}), cells.get("5000", {})
    if key == "http":
        lo, hi = lo.get("http", {}), hi.get("http", {})
    if "latency_ms" in lo and "latency_ms" in hi:
        return f"{hi['latency_ms'] / lo['latency_ms']:.2f}x"
    return "–"


def report(results: dict, lengths: list[int], meta: dict) -> str:
    lines = [
        "# Long-history cost (synthetic histories)",
        "",
        f"Synthetic data: random item ids from a {VOCAB:,}-item vocabulary, embedding dim "
        f"{EMBEDDING_DIM}, training batch {meta['batch']}. One request = 1 user with a history "
        f"of L items x {CANDIDATES} candidates, the user side computed once, median of "
        f"{meta['repeats']}: **in process** (the model's `encode_user` + `score`) and, "
        "separately, **over HTTP** (`POST /v1/rank` to a local server subprocess serving the "
        "same trained weights as a run directory of the synthetic schema, history sent as a "
        f"list in the request context, {CANDIDATES} candidates ranked into {CANDIDATES} "
        "slots, one keep-alive connection; the HTTP time includes JSON, the feature "
        "processor and the auction). Not an accuracy benchmark.",
        f"Machine: {meta['machine']}; load average {meta['load_average']} "
        "(timings need a quiet machine).",
        "",
        "| model | L | train samples/s | peak RSS (MiB) | in-process latency (ms) "
        "| HTTP latency (ms) | server peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, cells in results.items():
        for n in lengths:
            c = cells.get(str(n))
            if c is None:
                lines.append(f"| {model} | {n:,} | not run (stopped first) | – | – | – | – |")
                continue
            if "skipped" in c:
                lines.append(f"| {model} | {n:,} | skipped: {c['skipped']} | – | – | – | – |")
                continue
            h = c.get("http", {"skipped": "not measured"})
            if "skipped" in h:
                http_cols = [f"skipped: {h['skipped']}", "–"]
            else:
                rss = h.get("server_peak_rss_mib")
                http_cols = [f"{h['latency_ms']:.1f}", "?" if rss is None else f"{rss:,.0f}"]
            row = [model, f"{n:,}", f"{c['train_samples_per_s']:,.0f}",
                   f"{c['peak_rss_mib']:,.0f}", f"{c['latency_ms']:.1f}", *http_cols]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Latency ratio L = 5,000 over L = 50 (– where either cell is missing or skipped):",
        "",
        "| model | in process | over HTTP |",
        "|---|---|---|",
    ]
    for model, cells in results.items():
        lines.append(f"| {model} | {_ratio(cells, 'in_process')} | {_ratio(cells, 'http')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="50,500,5000,20000")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cell-timeout", type=int, default=300)
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cell", nargs=2, metavar=("MODEL", "L"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.cell:
        print(json.dumps(measure_cell(args.cell[0], int(args.cell[1]), args, args.run_dir)))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    results: dict[str, dict[str, dict]] = {}
    for m in args.models.split(","):
        for n in lengths:  # the files are rewritten after each cell: a stopped run keeps them
            results.setdefault(m, {})[str(n)] = run_cell(m, n, args)
            _write(args, lengths, results)
    print(_write(args, lengths, results))


def _write(args: argparse.Namespace, lengths: list[int], results: dict) -> str:
    """Write ``sequences.{json,md}`` (cells not run yet are absent); returns the report."""
    import torch

    from adrank.bench.provenance import cpu_model
    from adrank.utils import atomic_write_text

    meta = {
        "batch": args.batch,
        "repeats": args.repeats,
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({args.threads} threads)",
        "load_average": round(os.getloadavg()[0], 2),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "lengths": lengths, "results": results, "synthetic": True}
    atomic_write_text(args.output / "sequences.json", json.dumps(payload, indent=2))
    text = report(results, lengths, meta)
    atomic_write_text(args.output / "sequences.md", text)
    return text


if __name__ == "__main__":
    main()
