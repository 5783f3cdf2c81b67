"""Shared helpers for benchmark scripts: timing with medians, machine info, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adrank.utils import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    import numpy
    import polars
    import pyarrow
    import torch

    from adrank.bench.provenance import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB).

    Reads VmHWM from /proc (``ru_maxrss`` survives ``execve`` on Linux, so a child would
    report its parent's peak); falls back to ``ru_maxrss`` elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_time(
    fn: Callable[[], Any], repeats: int = 3, warmup: int = 1
) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def write_results(
    name: str, results: dict[str, Any], markdown: str, results_dir: Path | None = None
) -> Path:
    """Write ``<results_dir>/<name>.json`` and ``.md`` (with machine info); the directory
    defaults to ``benchmarks/results``."""
    out = RESULTS_DIR if results_dir is None else Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **results,
    }
    atomic_write_text(out / f"{name}.json", json.dumps(payload, indent=2))
    info = payload["machine"]
    header = (
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), polars {info['polars']}, pyarrow {info['pyarrow']}; "
        f"{payload['timestamp']}\n\n"
    )
    path = out / f"{name}.md"
    atomic_write_text(path, header + markdown)
    return path


def seeds_methods_parser(
    doc: str | None, methods: Sequence[str], seeds: Sequence[int], work: Path, out: Path
) -> argparse.ArgumentParser:
    """The arguments of a resumable (method, seed) benchmark: ``--seeds``, ``--methods``,
    ``--work`` (its run directories), ``--out`` (its results) and ``--report-only``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=methods)
    parser.add_argument("--work", type=Path, default=work)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--report-only", action="store_true")
    return parser


def run_pending(
    lines: Path,
    seeds: Sequence[int],
    methods: Sequence[str],
    run: Callable[[str, int], dict[str, Any]],
    after: Callable[[], None],
) -> None:
    """Run every (method, seed) that has no line in the JSON-lines file ``lines`` yet, seed
    by seed, appending each result as one line and calling ``after`` (e.g. the report)."""
    done = set()
    if lines.exists():
        rows = [json.loads(x) for x in lines.read_text().splitlines() if x.strip()]
        done = {(r["method"], r["seed"]) for r in rows}
    for seed in seeds:
        for method in methods:
            if (method, seed) in done:
                continue
            row = run(method, seed)
            with open(lines, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: row.get(k) for k in ("method", "seed", "test_auc")}))
            after()
