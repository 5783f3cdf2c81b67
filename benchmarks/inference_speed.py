"""Inference throughput and peak RSS: batch scoring and the in-process Predictor.

    python -m benchmarks inference [--run-dir RUN] [--repeats 3] [--threads N]
        [--rows 100000] [--scratch benchmarks/.scratch] [--backends torch,torchscript,onnx]
        [--batch-sizes 1,100,10000] [--no-file] [--results-dir DIR]

Modes, each measured in a fresh subprocess so peak RSS is per mode:

* ``predict_file``: the ``adrank predict`` path (``adrank.serve.predictor.predict_file``):
  load the run, read a Parquet file of raw frappe records (``--rows`` rows, the test split
  repeated), score, write Parquet. samples/s counts the scoring time that ``predict_file``
  reports; the end-to-end wall time (load + read + score + write) is reported too;
* ``predictor_b1`` / ``predictor_b100`` / ``predictor_b10000``: ``Predictor.predict`` on
  lists of raw record dicts of 1, 100 and 10,000 records (what a serving process gets),
  over a fixed number of records per measurement; median of ``--repeats`` measurements.
  With ``--backends``, each batch size is measured for each backend in turn
  (``predictor_b1_torchscript``, ``predictor_b1_onnx``: ``Predictor.load(run,
  backend=...)`` on the run's exported model, made with ``adrank export`` if missing).

Without ``--run-dir`` a frappe DeepFM (BARS config, 1 epoch) is trained once into
``<scratch>/inference/run_deepfm`` and reused. Results:
``<results-dir>/inference_speed.{json,md}`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mb, write_results
from benchmarks.train_speed import DEFAULT_SCRATCH, ROOT, default_data_dir

BATCH_SIZES = (1, 100, 10_000)
#: records scored per measurement for each batch size (keeps every mode a few seconds)
RECORDS_PER_MEASURE = {1: 2_000, 100: 20_000, 10_000: 100_000}


def ensure_run(run_dir: Path | None, scratch: Path, data_dir: str | None) -> Path:
    if run_dir is not None:
        return run_dir
    run_dir = scratch / "inference" / "run_deepfm"
    if (run_dir / "manifest.json").exists():
        return run_dir
    from adrank.config import resolve_run_config
    from adrank.pipeline import train_run

    print(f"training a 1-epoch frappe DeepFM into {run_dir} ...", flush=True)
    cfg = resolve_run_config("frappe", "deepfm", overrides=["train.max_epochs=1"])
    cfg.train.progress = False
    train_run(cfg, run_dir, data_dir=data_dir)
    return run_dir


def ensure_input(scratch: Path, data_dir: str | None, rows: int) -> Path:
    """Raw frappe test records (no label), repeated to ``rows`` rows, as Parquet."""
    import polars as pl

    from adrank.data.datasets import get_dataset, resolve_data_dir

    path = scratch / "inference" / f"frappe_records_{rows}.parquet"
    if path.exists():
        return path
    builder = get_dataset("frappe")
    test = builder.build_splits(resolve_data_dir(data_dir))["test"]
    test = test.select(builder.schema().source_columns()).drop(list(builder.schema().labels))
    reps = -(-rows // test.height)
    frame = pl.concat([test] * reps).head(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


BACKENDS = ("torch", "torchscript", "onnx")


def mode_name(batch: int, backend: str) -> str:
    return f"predictor_b{batch}" + ("" if backend == "torch" else f"_{backend}")


def parse_mode(mode: str) -> tuple[int, str]:
    """``predictor_b100_onnx`` -> (100, "onnx"); ``predictor_b1`` -> (1, "torch")."""
    batch, _, backend = mode.removeprefix("predictor_b").partition("_")
    return int(batch), backend or "torch"


def ensure_exports(run_dir: Path, backends: list[str], data_dir: str | None) -> None:
    """Export the run's model for every non-torch backend it lacks, with the parity check
    of ``adrank export`` (:func:`adrank.serve.export.export`)."""
    from adrank.serve.export import export

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for backend in backends:
        if backend == "torch" or backend in (manifest.get("exports") or {}):
            continue
        print(f"exporting {run_dir} as {backend} ...", flush=True)
        export(run_dir, backend, data_dir=data_dir)


def worker(mode: str, run_dir: str, input_path: str, repeats: int, threads: int) -> None:
    import polars as pl
    import torch

    torch.set_num_threads(threads)
    from adrank.serve.predictor import Predictor, predict_file

    out: dict[str, Any] = {"mode": mode}
    if mode == "predict_file":
        runs = []
        for i in range(repeats):
            t0 = time.perf_counter()
            target = Path(input_path).with_name(f".scored_{os.getpid()}_{i}.parquet")
            rows, seconds = predict_file(run_dir, input_path, target)
            wall = time.perf_counter() - t0
            target.unlink(missing_ok=True)
            runs.append({"rows": rows, "score_s": seconds, "wall_s": wall})
        score_s = statistics.median(r["score_s"] for r in runs)
        out.update(
            rows=runs[0]["rows"],
            samples_per_s=runs[0]["rows"] / score_s,
            end_to_end_rows_per_s=runs[0]["rows"] / statistics.median(r["wall_s"] for r in runs),
            runs=runs,
        )
    else:
        batch, backend = parse_mode(mode)
        predictor = Predictor.load(run_dir, backend=backend)
        records = pl.read_parquet(input_path).head(RECORDS_PER_MEASURE[batch]).to_dicts()
        chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
        predictor.predict(chunks[0])  # warm-up
        times, latencies = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for chunk in chunks:
                t1 = time.perf_counter()
                predictor.predict(chunk)
                latencies.append(time.perf_counter() - t1)
            times.append(time.perf_counter() - t0)
        latencies.sort()
        out.update(
            batch_size=batch,
            backend=backend,
            rows=len(records),
            samples_per_s=len(records) / statistics.median(times),
            latency_p50_ms=1e3 * latencies[len(latencies) // 2],
            latency_p99_ms=1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        )
    out["peak_rss_mb"] = peak_rss_mb()
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "RUN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for predict_file")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument(
        "--backends", type=_names, default=["torch"], help=f"Predictor backends: {BACKENDS}"
    )
    parser.add_argument("--batch-sizes", type=_sizes, default=list(BATCH_SIZES))
    parser.add_argument("--no-file", action="store_true", help="skip the predict_file mode")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.input, args.repeats, args.threads)
        return
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
    run_dir = ensure_run(args.run_dir, args.scratch, args.data_dir)
    ensure_exports(run_dir, args.backends, args.data_dir)
    input_path = ensure_input(args.scratch, args.data_dir, max(args.rows, 10_000))
    modes = [] if args.no_file else ["predict_file"]
    modes += [mode_name(b, backend) for b in args.batch_sizes for backend in args.backends]
    results: dict[str, Any] = {"run_dir": str(run_dir), "modes": {}}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for mode in modes:
        cmd = [sys.executable, "-m", "benchmarks.inference_speed", "--worker", mode]
        cmd += [str(run_dir), "--input", str(input_path), "--repeats", str(args.repeats)]
        cmd += ["--threads", str(args.threads)]
        print(f"{mode}: running ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{mode} failed:\n{proc.stderr[-4000:]}")
        r = json.loads(lines[-1][len("RESULT ") :])
        results["modes"][mode] = r
        print(f"  {r['samples_per_s']:,.0f} samples/s, peak RSS {r['peak_rss_mb']:,.0f} MiB")
    lines_md = [
        "| mode | rows | samples/s | latency p50 / p99 ms | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for mode, r in results["modes"].items():
        lat = (
            f"{r['latency_p50_ms']:.2f} / {r['latency_p99_ms']:.2f}"
            if "latency_p50_ms" in r
            else f"end-to-end {r['end_to_end_rows_per_s']:,.0f} rows/s"
        )
        lines_md.append(
            f"| {mode} | {r['rows']:,} | {r['samples_per_s']:,.0f} | {lat} | "
            f"{r['peak_rss_mb']:,.0f} |"
        )
    lines_md.append(
        f"\nfrappe DeepFM (`{run_dir}`), {args.threads} threads, median of {args.repeats}; "
        "each mode in a fresh process (peak RSS per mode). predict_file = the `adrank "
        "predict` path (scoring time; end-to-end includes load, read and write). "
        "predictor_bN_<backend>: `Predictor.load(run, backend=...)` on the exported model "
        "(`adrank export`); predictor_bN alone is the torch backend.\n"
    )
    md = "\n".join(lines_md)
    path = write_results("inference_speed", results, md, args.results_dir)
    print(md)
    print(f"written: {path}")


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _sizes(text: str) -> list[int]:
    sizes = [int(t) for t in _names(text)]
    unknown = sorted(set(sizes) - set(RECORDS_PER_MEASURE))
    if unknown:
        raise argparse.ArgumentTypeError(f"batch sizes must be among {sorted(RECORDS_PER_MEASURE)}")
    return sizes


if __name__ == "__main__":
    main()
