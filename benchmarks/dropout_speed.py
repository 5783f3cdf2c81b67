"""Training speed with ``train.dropout_kernel: torch`` vs ``fast`` on frappe.

    python -m benchmarks dropout [--models dcnv3,finalmlp,deepfm] [--rounds 3]
        [--epochs 2] [--threads 2] [--scratch benchmarks/.scratch] [--results-dir DIR]

Each run trains one model with its shipped frappe config (``configs/models/frappe/``) for
``--epochs`` epochs in its own process and reports the last epoch's training samples/s
(epoch 1 is the warm-up). Rounds alternate the kernel order (torch first, then fast first,
...), so the machine's drift hits both alike; the speed-up of a model is the median over
rounds of the same round's fast ÷ torch. The two kernels draw different masks, so losses
differ per seed (the accuracy A/B is ``benchmarks.dropout_ab``). Results:
``<results-dir>/dropout_speed.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from benchmarks.train_speed import DEFAULT_SCRATCH, ROOT, default_data_dir

MODELS = ("dcnv3", "finalmlp", "deepfm")
KERNELS = ("torch", "fast")


def worker(model: str, kernel: str, run_dir: str, epochs: int, threads: int) -> None:
    """Train one run and print ``RESULT {json}`` with the last epoch's samples/s."""
    from adrank.config import resolve_run_config
    from adrank.pipeline import train_run

    overrides = [
        f"train.max_epochs={epochs}",
        "train.patience=100",
        f"train.num_threads={threads}",
        f"train.dropout_kernel={kernel}",
    ]
    cfg = resolve_run_config("frappe", model, overrides=overrides)
    cfg.train.progress = False
    train_run(cfg, run_dir, data_dir=os.environ.get("ADRANK_DATA_DIR"), overwrite=True)
    epochs_seen = [
        json.loads(line)
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if '"epoch"' in line
    ]
    last = epochs_seen[-1]
    print("RESULT " + json.dumps({"epoch": last["epoch"], "sps": last["train_samples_per_s"]}))


def run_order(models: list[str], rounds: int) -> list[tuple[int, str, str]]:
    """(round, model, kernel) in run order: each round runs every model with both kernels,
    torch first in odd rounds and fast first in even ones."""
    order = []
    for r in range(1, rounds + 1):
        kernels = KERNELS if r % 2 else KERNELS[::-1]
        order += [(r, m, k) for m in models for k in kernels]
    return order


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: median samples/s per kernel and the median of per-round fast ÷ torch."""
    out: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        by = {(r["round"], r["kernel"]): r["sps"] for r in runs if r["model"] == model}
        rounds = sorted({rnd for rnd, _ in by})
        paired = [n for n in rounds if (n, "fast") in by and (n, "torch") in by]
        ratios = [by[(n, "fast")] / by[(n, "torch")] for n in paired]
        out[model] = {
            kernel: statistics.median([v for (_, k), v in by.items() if k == kernel])
            for kernel in KERNELS
            if any(k == kernel for _, k in by)
        }
        out[model]["ratios"] = ratios
        out[model]["speedup"] = statistics.median(ratios) if ratios else None
    return out


def markdown(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"frappe, each model's shipped config, {args.epochs} epochs, {args.threads} threads; "
        f"samples/s of epoch {args.epochs} (median of {args.rounds} rounds); speed-up = median "
        "over rounds of fast ÷ torch in the same round (range in brackets). Rounds alternate "
        "the kernel order. Command: `python -m benchmarks dropout`.\n",
        "| model | `torch` samples/s | `fast` samples/s | speed-up |",
        "|---|---|---|---|",
    ]
    for model, s in summary.items():
        ratios = s["ratios"]
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        speedup = "" if s["speedup"] is None else f"{s['speedup']:.2f}×{spread}"
        lines.append(
            f"| {model} | {s.get('torch', float('nan')):,.0f} | "
            f"{s.get('fast', float('nan')):,.0f} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "KERNEL", "RUN_DIR"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, epochs=args.epochs, threads=args.threads)
        return
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is the warm-up)")
    models = [m for m in args.models.split(",") if m]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.data_dir:
        env["ADRANK_DATA_DIR"] = str(args.data_dir)
    runs: list[dict[str, Any]] = []
    for rnd, model, kernel in run_order(models, args.rounds):
        run_dir = args.scratch / "dropout_speed" / f"{model}_{kernel}"
        cmd = [sys.executable, "-m", "benchmarks.dropout_speed", "--worker", model, kernel]
        cmd += [str(run_dir), "--epochs", str(args.epochs), "--threads", str(args.threads)]
        print(f"round {rnd}: {model} {kernel} ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"{model} {kernel} failed:\n{proc.stderr[-4000:]}")
        result = json.loads(found[-1][len("RESULT ") :])
        runs.append({"round": rnd, "model": model, "kernel": kernel, **result})
        print(f"  {result['sps']:,.0f} samples/s", flush=True)
    summary = summarize(runs)
    md = markdown(summary, args)
    path = write_results(
        "dropout_speed",
        {"epochs": args.epochs, "threads": args.threads, "runs": runs, "summary": summary},
        md,
        args.results_dir,
    )
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
