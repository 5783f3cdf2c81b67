"""Long-history cost of the sequence models (``python -m benchmarks sequences``).

On **synthetic** histories (random item ids; labelled synthetic everywhere, never an
accuracy claim), for each sequence model and history length L (default 50, 500, 5,000 and
20,000), one subprocess per cell measures:

* training samples/s (Adam steps on batches of ``--batch`` users, after a warm-up step);
* the process's peak resident memory (MiB);
* the latency of one request: one user with a history of L items and 100 candidates, scored
  in process through the model's user-once API (``encode_user`` then ``score``), median of
  ``--repeats``.

Per-model caps on L (from the maths and the code: BST is O(L²) per candidate, DIEN and DMIN
step through the history in Python) and a per-cell time limit keep the run bounded; a cell
over a cap, over the time limit or out of memory is **reported as skipped with the reason**,
never hidden. The report gives each model's latency ratio L = 5,000 over L = 50 (the issue's
aim: SDIM within 2x). Latency over HTTP needs the user-once API wired into the service,
which is not done yet: the HTTP column says so.

Timings are only meaningful on a quiet machine: the report records the load average.

    python -m benchmarks sequences [--lengths 50,500,5000,20000] [--models din,...]
        [--batch 256] [--steps 5] [--repeats 5] [--cell-timeout 300] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("din", "dien", "bst", "dmin", "sim", "eta", "sdim", "twin", "qin")
#: longest history each model is run at (beyond it the cell is skipped, with this reason)
CAPS = {
    "bst": (5_000, "O(L^2) self-attention per candidate"),
    "dien": (500, "GRU/AUGRU step through the history in Python"),
    "dmin": (500, "step-wise refiner/extractor in Python"),
}
VOCAB = 100_000
CANDIDATES = 100


def feature_map(length: int):
    from adrank.data.feature_map import FeatureMap, FieldInfo

    fields = (
        FieldInfo("user", "categorical", 10_000, 0, "user"),
        FieldInfo("item", "categorical", VOCAB, 0, "item"),
        FieldInfo("hist_item", "sequence", VOCAB, length, "item", target="item"),
    )
    return FeatureMap(fields=fields, labels=("click",))


def synthetic_batch(rows: int, length: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    hist = torch.randint(2, VOCAB, (rows, length), generator=gen)
    return {
        "user": torch.randint(2, 10_000, (rows,), generator=gen),
        "item": torch.randint(2, VOCAB, (rows,), generator=gen),
        "hist_item": hist,
    }, torch.randint(0, 2, (rows,), generator=gen).float()


def measure_cell(model_name: str, length: int, args: argparse.Namespace) -> dict:
    """One (model, L) cell, in this process (run it in a subprocess for its own peak RSS)."""
    import torch

    from adrank.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, feature_map(length), embedding_dim=16)
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
    items = torch.randint(2, VOCAB, (CANDIDATES,), generator=torch.Generator().manual_seed(3))
    latencies = []
    with torch.inference_mode():
        model.score_candidates(user, {"item": items})  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.score_candidates(user, {"item": items})
            latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    return {
        "train_samples_per_s": args.batch * args.steps / train_s,
        "latency_ms": latencies[len(latencies) // 2],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_cell(model_name: str, length: int, args: argparse.Namespace) -> dict:
    cap = CAPS.get(model_name)
    if cap is not None and length > cap[0]:
        return {"skipped": f"L > {cap[0]:,}: {cap[1]}"}
    cmd = [sys.executable, "-m", "benchmarks.sequences", "--cell", model_name, str(length),
           "--batch", str(args.batch), "--steps", str(args.steps),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cell_timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over the {args.cell_timeout} s cell time limit"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        why = "out of memory" if "memory" in tail.lower() else tail[:200]
        return {"skipped": f"failed: {why}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict, lengths: list[int], meta: dict) -> str:
    head = ["model", *[f"L={n:,}" for n in lengths], "latency ratio"]
    lines = [
        "# Long-history cost (synthetic histories)",
        "",
        f"Synthetic data: random item ids from a {VOCAB:,}-item vocabulary, embedding dim 16, "
        f"training batch {meta['batch']}, one request = 1 user x {CANDIDATES} candidates scored "
        "in process with the user side computed once. Not an accuracy benchmark.",
        f"Machine: {meta['machine']}; load average {meta['load_average']} "
        "(timings need a quiet machine).",
        "",
        "Each cell: in-process request latency (ms) / training samples/s / peak RSS (MiB). "
        "Latency over HTTP: not measured yet (the user-once API is not wired into the service).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for model, cells in results.items():
        row = [model]
        for n in lengths:
            c = cells[str(n)]
            row.append(
                f"skipped: {c['skipped']}"
                if "skipped" in c
                else f"{c['latency_ms']:.1f} / {c['train_samples_per_s']:,.0f} / "
                f"{c['peak_rss_mib']:,.0f}"
            )
        lo, hi = cells.get("50", {}), cells.get("5000", {})
        ratio = (
            f"{hi['latency_ms'] / lo['latency_ms']:.2f}x"
            if "latency_ms" in lo and "latency_ms" in hi
            else "–"
        )
        lines.append("| " + " | ".join([*row, ratio]) + " |")
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
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--cell", nargs=2, metavar=("MODEL", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.cell:
        print(json.dumps(measure_cell(args.cell[0], int(args.cell[1]), args)))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    results = {m: {str(n): run_cell(m, n, args) for n in lengths} for m in args.models.split(",")}
    import platform

    meta = {
        "batch": args.batch,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({args.threads} threads)",
        "load_average": round(os.getloadavg()[0], 2),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    from adrank.utils import atomic_write_text

    payload = {"meta": meta, "lengths": lengths, "results": results, "synthetic": True}
    atomic_write_text(args.output / "sequences.json", json.dumps(payload, indent=2))
    atomic_write_text(args.output / "sequences.md", report(results, lengths, meta))
    print(report(results, lengths, meta))


if __name__ == "__main__":
    main()
