"""Shared helpers for benchmark scripts: timing with medians, machine info, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    import numpy
    import polars
    import pyarrow
    import torch

    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
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


def write_results(name: str, results: dict[str, Any], markdown: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md`` (with machine info)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_info(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **results,
    }
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2))
    info = payload["machine"]
    header = (
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), polars {info['polars']}, pyarrow {info['pyarrow']}; "
        f"{payload['timestamp']}\n\n"
    )
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(header + markdown)
    return path
