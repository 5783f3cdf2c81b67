"""Drift detection on the **synthetic** drifting Criteo-schema stream.

``python -m benchmarks.stream_drift [--seed 0] [--chunks 40] [--rows 5000] [--report-only]``

The stream (:mod:`adrank.stream.drift_synth`, synthetic, labelled as such everywhere): an
abrupt drift at chunk 10, a gradual one over chunks 20-25 and a recurrence of the first
concept at chunk 30. Two strategies run over it (DeepFM, embedding dim 8, one hidden layer
of 64, batch 512, at most 5 epochs per update, 1 thread):

* ``fine_tune``: its per-row errors on each next chunk, in arrival order, feed ADWIN and
  DDM from the ``river`` library (run in their own environment by
  ``benchmarks/peers/river_drift.py`` with ``$RIVER_PYTHON``: 0/1 errors at threshold 0.5);
* ``drift_ensemble``: its own error-based detector (chunk-level logloss of the best
  member before it trains on the chunk).

Scoring: a detection in chunk c belongs to the last true drift that started at or before c
when c is at most 5 chunks after that drift's end; the first such detection gives the
drift's **delay** (c - start, in chunks), every other detection is a **false alarm**.
Results: ``benchmarks/results/stream/synthetic_drift/`` (summary.md, detections.json,
auc_over_time.png, errors.npz for the river run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adrank.utils import atomic_write, atomic_write_text

RESULTS = Path(__file__).parent / "results" / "stream" / "synthetic_drift"
PARAMS = {"embedding_dim": 8, "hidden_units": [64], "net_dropout": 0.0, "batch_norm": False}
WINDOW = 5  # chunks after a drift's end in which a detection still counts as that drift's
#: the Python that has river (``$RIVER_PYTHON``, else the peer environment)
RIVER_PYTHON = os.environ.get(
    "RIVER_PYTHON", str(Path(__file__).parent / ".peers" / "river" / "bin" / "python")
)

logger = logging.getLogger("benchmarks.stream_drift")


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as f:  # a file object: np.savez would add ".npz" to a path
        np.savez(f, **arrays)


def score(detections: list[int], drifts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per true drift the delay (or ``None``: missed), and the false alarms (see module)."""
    per_drift: dict[str, Any] = {d["kind"]: None for d in drifts}
    false_alarms: list[int] = []
    for c in sorted(set(detections)):
        owner = None
        for d in drifts:
            if d["start"] <= c <= d["end"] + WINDOW:
                owner = d
        if owner is not None and per_drift[owner["kind"]] is None:
            per_drift[owner["kind"]] = c - owner["start"]
        else:
            false_alarms.append(c)
    return {"delay": per_drift, "false_alarms": false_alarms}


def run(args: argparse.Namespace) -> None:
    from adrank.config import TrainConfig
    from adrank.stream.drift_synth import drifting_criteo_stream
    from adrank.stream.protocol import StreamSettings
    from adrank.stream.runner import run_stream

    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    schema, chunks, drifts = drifting_criteo_stream(args.chunks, args.rows, args.seed)
    config = TrainConfig(batch_size=512, num_threads=1, patience=1, embedding_regularizer=0.0)
    settings = StreamSettings(chunks=args.chunks, cold_by="C1")
    errors: dict[int, np.ndarray] = {}

    def keep(chunk: int, predictions: Any) -> None:
        probs = predictions.probs if predictions.probs.ndim == 1 else predictions.probs[:, 0]
        errors[chunk] = ((probs >= 0.5) != (predictions.labels[:, 0] >= 0.5)).astype(np.int8)

    records = {}
    for strategy, hook in (("fine_tune", keep), ("drift_ensemble", None)):
        logger.info("running %s on the synthetic drifting stream", strategy)
        records[strategy] = run_stream(
            schema, chunks, "deepfm", PARAMS, config, strategy, None, settings, args.seed,
            dataset="criteo_synth_drift (synthetic)", on_predictions=hook,
        )  # fmt: skip
    order = sorted(errors)
    arrays = {
        "errors": np.concatenate([errors[c] for c in order]),
        "chunk": np.concatenate([np.full(len(errors[c]), c) for c in order]),
    }
    atomic_write(RESULTS / "errors.npz", lambda p: _savez(p, arrays))
    ours = [r["chunk"] - 1 for r in records["drift_ensemble"] if r["strategy_info"].get("drift")]
    payload = {
        "synthetic": True,
        "stream": {"chunks": args.chunks, "rows": args.rows, "seed": args.seed},
        "drifts": [vars(d) for d in drifts],
        "detections": {"drift_ensemble (error-based)": ours},
        "auc": {s: [r["auc"] for r in recs] for s, recs in records.items()},
        "load_average": [r["load_average"] for r in records["fine_tune"]],
    }
    atomic_write_text(RESULTS / "detections.json", json.dumps(payload, indent=2))
    script = Path(__file__).parent / "peers" / "river_drift.py"
    try:
        subprocess.run([*RIVER_PYTHON.split(), str(script), str(RESULTS)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        logger.warning("river's ADWIN/DDM not run (%s); set RIVER_PYTHON", exc)
    report()


def report() -> None:
    payload = json.loads((RESULTS / "detections.json").read_text())
    river_path = RESULTS / "river_detections.json"
    if river_path.exists():
        payload["detections"].update(json.loads(river_path.read_text())["detections"])
    drifts = payload["drifts"]
    lines = [
        "# Drift detection on a SYNTHETIC drifting Criteo-schema stream",
        "",
        f"**Synthetic data** (`adrank.stream.drift_synth`): {payload['stream']['chunks']} "
        f"chunks of {payload['stream']['rows']:,} rows, seed {payload['stream']['seed']}; "
        "abrupt drift at chunk 10, gradual over chunks 20-25, recurrence of the first "
        "concept at chunk 30. Delay in chunks from the drift's first chunk (a detection "
        f"counts for a drift up to {WINDOW} chunks after its end); other detections are false "
        "alarms. ADWIN and DDM (river) see the fine-tuned model's 0/1 errors on each next "
        "chunk, row by row; the drift-aware ensemble's detector sees its best member's "
        "logloss per chunk. `python -m benchmarks.stream_drift`.",
        "",
        "| detector | abrupt delay | gradual delay | recurrent delay | false alarms | "
        "detections (chunks) |",
        "|---|---|---|---|---|---|",
    ]
    for name, chunks in payload["detections"].items():
        s = score(chunks, drifts)
        delay = [
            "missed" if s["delay"][k] is None else str(s["delay"][k])
            for k in ("abrupt", "gradual", "recurrent")
        ]
        lines.append(
            f"| {name} | {' | '.join(delay)} | {len(s['false_alarms'])} | "
            f"{', '.join(map(str, sorted(set(chunks)))) or '-'} |"
        )
    lines += ["", "![AUC over time on the synthetic stream](auc_over_time.png)", ""]
    atomic_write_text(RESULTS / "summary.md", "\n".join(lines))
    _plot(payload)
    print((RESULTS / "summary.md").read_text())


def _plot(payload: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, aucs in payload["auc"].items():
        ax.plot(range(1, len(aucs) + 1), aucs, marker="o", markersize=3, label=name)
    for d in payload["drifts"]:
        ax.axvspan(d["start"] - 0.5, d["end"] + 0.5, color="grey", alpha=0.2)
        ax.text(d["start"], ax.get_ylim()[1], d["kind"], fontsize=8, va="top")
    ax.set_xlabel("scored chunk")
    ax.set_ylabel("next-chunk AUC")
    ax.set_title("SYNTHETIC drifting Criteo-schema stream (shaded: true drifts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_write(RESULTS / "auc_over_time.png", lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream_drift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("adrank.train").setLevel(logging.WARNING)
    report() if args.report_only else run(args)


if __name__ == "__main__":
    sys.exit(main())
