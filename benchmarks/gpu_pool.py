"""Pool the runs of several ``python -m benchmarks gpu`` calls into one table.

A lent GPU comes in slices of about 15 minutes, so one call may time only part of the
three runs per cell the protocol asks for. This pools the runs of several calls on the
same GPU kind and PyTorch version: per cell, every loop run and every run of the side that
is adrank's defaults *today*, then the median of each. A source is ``PATH`` (its
``adrank`` side) or ``PATH:VARIANT`` (its variant's runs instead, for a call made before
that variant's settings became the defaults; the caller vouches for that, and the table
names each source and side). Nothing is re-measured::

    python -m benchmarks.gpu_pool benchmarks/results/gpu_session16/gpu.json:cuda-graph \\
        benchmarks/results/gpu_session16_cells/gpu.json --output benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

#: the issue's hand-written loop on an H200 (issue 18, 8M rows), DeepFM only
REFERENCE_LOOP = {"deepfm-8192": 2_055_899.0, "deepfm-65536": 4_031_564.0}


def parse_source(text: str) -> tuple[Path, str | None]:
    path, _, variant = text.partition(".json:")
    if variant:
        return Path(path + ".json"), variant
    return Path(text), None


def pool(sources: list[tuple[Path, str | None]]) -> dict[str, Any]:
    """Per cell: the pooled loop and adrank runs (each tagged with its source), medians,
    ratio, and adrank against the issue's reference loop where there is one."""
    if not sources:
        raise ValueError("no source to pool")
    machines: list[dict[str, Any]] = []
    cells: dict[str, dict[str, Any]] = {}
    for path, variant in sources:
        got = json.loads(path.read_text())
        machines.append(got["machine"])
        for name, cell in got["cells"].items():
            if variant is None:
                adrank = cell.get("adrank", [])
            elif variant in cell.get("variants", {}):
                adrank = cell["variants"][variant]["runs"]
            else:
                raise ValueError(f"{path}: cell {name} has no variant {variant!r}")
            side = "adrank" if variant is None else f"variant {variant}"
            out = cells.setdefault(name, {"data": cell["data"], "loop": [], "adrank": []})
            tag = {"source": str(path), "side": side}
            out["loop"] += [{**tag, **r} for r in cell.get("loop", []) if "samples_per_s" in r]
            out["adrank"] += [{**tag, **r} for r in adrank if "samples_per_s" in r]
    kinds = {(m["device"], m["torch"]) for m in machines}
    if len(kinds) != 1:
        raise ValueError(f"the sources were measured on different machines: {sorted(kinds)}")
    for name, out in cells.items():
        for side in ("loop", "adrank"):
            rates = [r["samples_per_s"] for r in out[side]]
            out[f"{side}_samples_per_s"] = statistics.median(rates) if rates else None
        loop, adrank = out["loop_samples_per_s"], out["adrank_samples_per_s"]
        out["ratio"] = adrank / loop if loop and adrank else None
        reference = REFERENCE_LOOP.get(name)
        if reference is not None:
            out["reference_loop_samples_per_s"] = reference
            out["loop_vs_reference"] = loop / reference if loop else None
            out["adrank_vs_reference"] = adrank / reference if adrank else None
    return {"machine": machines[0], "sources": [str(p) for p, _ in sources], "cells": cells}


def pooled_markdown(pooled: dict[str, Any], sources: list[tuple[Path, str | None]]) -> str:
    def num(x: float | None, fmt: str = ",.0f") -> str:
        return "-" if x is None else format(x, fmt)

    m = pooled["machine"]
    lines = [
        f"# GPU training: adrank vs a hand-written loop ({m['device']}), pooled calls",
        "",
        f"PyTorch {m['torch']} (CUDA {m['cuda']}). Runs pooled from "
        + "; ".join(f"`{p}` ({'adrank side' if v is None else f'variant {v}'})" for p, v in sources)
        + " by `python -m benchmarks.gpu_pool`; each run is 2 epochs with epoch 1 as warm-up, "
        "samples/s over training steps only; medians of the pooled runs. Criteo cells are "
        "synthetic data.",
        "",
        "| cell | data | loop runs | loop, samples/s | adrank runs | adrank, samples/s | "
        "adrank / loop | loop / issue's loop | adrank / issue's loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in pooled["cells"].items():
        seeds = ", ".join(str(r["seed"]) for r in c["adrank"])
        lines.append(
            f"| {name} | {c['data']} | {len(c['loop'])} | {num(c['loop_samples_per_s'])} | "
            f"{len(c['adrank'])} (seeds {seeds}) | {num(c['adrank_samples_per_s'])} | "
            f"{num(c['ratio'], '.2f')} | {num(c.get('loop_vs_reference'), '.2f')} | "
            f"{num(c.get('adrank_vs_reference'), '.2f')} |"
        )
    lines += [
        "",
        "The issue's loop: its hand-written loop's rates on an H200 at 8M rows (DeepFM only: "
        "2,055,899 samples/s at batch 8,192 and 4,031,564 at 65,536). Its honesty bar is our "
        "loop at 0.9x or more of them.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_pool", description=__doc__)
    p.add_argument("sources", nargs="+", help="gpu.json files, PATH or PATH:VARIANT")
    p.add_argument("--output", type=Path, required=True, help="folder for gpu.json and gpu.md")
    args = p.parse_args(argv)
    sources = [parse_source(s) for s in args.sources]
    pooled = pool(sources)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("gpu.json", json.dumps(pooled, indent=1) + "\n"),
        ("gpu.md", pooled_markdown(pooled, sources)),
    ):
        tmp = args.output / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(args.output / name)
    print(f"pooled {len(sources)} call(s) into {args.output}/gpu.json and gpu.md")


if __name__ == "__main__":
    main()
