"""Training throughput of 1 vs N processes (DDP, gloo on CPU) on this machine.

Runs ``adrank train`` for the tuned DeepFM on frappe (BARS config, global batch 4096) once
per process count, through the same launcher as ``adrank train --nproc N``, and records the
training samples/s of every epoch (global samples / rank 0's training time; validation and
start-up excluded). The 1-process run uses all cores for torch's threads; with N processes
each worker gets ``cores // N`` threads.

    python benchmarks/ddp_scaling.py --nproc 1 2 --epochs 2 \
        --output benchmarks/results/ddp_scaling.json

Needs the frappe data (``--data-dir`` or ``$ADRANK_DATA_DIR``). Run it on an idle machine:
numbers taken while other jobs use the cores say little about scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from adrank.data.prepare import prepare_dataset
from adrank.train.launch import launch_cli
from adrank.utils import atomic_write_text


def run_once(
    nproc: int, epochs: int, model: str, overrides: list[str], data_dir: str, cache_dir: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"ddp-scaling-{nproc}-") as tmp:
        run_dir = Path(tmp) / "run"
        argv = ["-q", "train", "--dataset", "frappe", "--model", model, "--run-dir",
                str(run_dir), "--data-dir", data_dir, "--cache-dir", cache_dir,
                "--set", f"train.max_epochs={epochs}", "--set", "train.progress=false",
                "--set", "train.patience=100"]  # fmt: skip
        for item in overrides:
            argv += ["--set", item]
        start = time.perf_counter()
        launch_cli(nproc, argv)
        wall = time.perf_counter() - start
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs_seen = [x for x in lines if "epoch" in x and "train_samples_per_s" in x]
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "nproc": nproc,
        "epoch_train_samples_per_s": [round(x["train_samples_per_s"]) for x in epochs_seen],
        "epoch_train_time_s": [round(x["train_time_s"], 2) for x in epochs_seen],
        "train_samples_per_s": round(metrics["train_samples_per_s"]),
        "test_auc": metrics["test"]["auc"],
        "wall_s_including_startup": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="deepfm")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--note", default="", help="e.g. 'idle machine' or 'under load'")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("pass --data-dir or set ADRANK_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-cache-") as tmp_cache:
        cache_dir = args.cache_dir or tmp_cache
        prepare_dataset("frappe", data_dir=args.data_dir, cache_dir=cache_dir)
        runs = []
        for nproc in args.nproc:
            runs.append(
                run_once(nproc, args.epochs, args.model, args.overrides, args.data_dir, cache_dir)
            )
            print(json.dumps(runs[-1]), flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "model": args.model,
        "dataset": "frappe",
        "overrides": args.overrides,
        "cores": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_after": load,
        "note": args.note,
        "runs": runs,
    }
    base = runs[0]["epoch_train_samples_per_s"][-1]
    for run in runs:
        run["speedup_last_epoch_vs_first_setting"] = round(
            run["epoch_train_samples_per_s"][-1] / max(base, 1), 2
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text + "\n")


if __name__ == "__main__":
    main()
