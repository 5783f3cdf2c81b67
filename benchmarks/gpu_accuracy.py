"""The accuracy check of ``python -m benchmarks gpu --accuracy`` (issue 18): DeepFM on the
real ``frappe`` split with its committed config and validation early stopping, 3 seeds on
the accelerator against 3 on the CPU (trained, or the leaderboard's recorded runs), and
whether |mean test AUC difference| <= 2 x the pooled std."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from adrank.config import RunConfig, TrainConfig
from adrank.models.registry import build_model
from adrank.train.trainer import Trainer
from adrank.utils import seed_everything
from benchmarks.gpu_data import load_frappe

ROOT = Path(__file__).resolve().parent.parent


def run_accuracy(
    args: argparse.Namespace,
    budget: Any,
    variants: dict[str, dict[str, Any]],
    variant: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """DeepFM on frappe, ``--accuracy-seeds`` seeds on ``--device`` and on the CPU (or the
    recorded CPU runs) while ``budget.left()`` allows; ``variant`` = (a name in
    ``variants``, why it was chosen) trains the device side with that variant's settings."""
    fm, splits = load_frappe(args.frappe)
    cfg = RunConfig.load(ROOT / "configs" / "models" / "frappe" / "deepfm.yaml")
    out: dict[str, Any] = {"model": "deepfm", "data": "frappe", "config": cfg.to_dict()}
    extra = variants[variant[0]] if variant else {}
    out["device_settings"] = {"variant": variant[0] if variant else "defaults", **extra}
    if variant:
        out["device_settings"]["why"] = variant[1]
    out["devices"] = {}
    for side, device in (("device", args.device), ("cpu", "cpu")):
        if side == "cpu" and args.cpu_reference is not None:
            out["devices"][side] = _recorded_runs(args.cpu_reference, args)
            continue
        runs = []
        for r in range(args.accuracy_seeds):
            if budget.left() < args.min_left_s:
                break
            seed = args.seed + r
            seed_everything(seed)
            net = build_model("deepfm", fm, **cfg.params)
            settings = {
                **vars(cfg.train),
                "device": device,
                "seed": seed,
                "progress": False,
                "max_epochs": min(cfg.train.max_epochs, args.accuracy_epochs),
            }
            if device == "cpu":
                settings["num_threads"] = args.cpu_threads
            else:
                settings.update(extra)
            result = Trainer(net, TrainConfig(**settings)).fit(
                splits["train"], splits["valid"], splits["test"]
            )
            runs.append(
                {
                    "seed": seed,
                    "test_auc": (result.test or {}).get("auc"),
                    "best_epoch": result.best_epoch,
                }
            )
            print(f"accuracy {device} seed {seed}: {runs[-1]}", flush=True)
        out["devices"][side] = _auc_summary(device, runs)
    a, b = out["devices"]["device"], out["devices"]["cpu"]
    if a["std"] is not None and b["std"] is not None:
        pooled = math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)
        out["delta_mean_auc"] = a["mean"] - b["mean"]
        out["pooled_std"] = pooled
        out["within_2_pooled_std"] = abs(out["delta_mean_auc"]) <= 2 * pooled
    return out


def _auc_summary(device: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    aucs = [r["test_auc"] for r in runs]
    return {
        "device": device,
        "runs": runs,
        "mean": statistics.fmean(aucs) if aucs else None,
        "std": statistics.stdev(aucs) if len(aucs) > 1 else None,
    }


def _recorded_runs(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """CPU runs of DeepFM on frappe recorded by ``adrank benchmark`` (``runs.jsonl``), for
    the accuracy seeds, instead of training them again on the GPU machine's CPU."""
    seeds = [args.seed + r for r in range(args.accuracy_seeds)]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [
        {"seed": r["seed"], "test_auc": r["test_auc"], "best_epoch": r.get("best_epoch")}
        for r in rows
        if r.get("model") == "deepfm" and r.get("seed") in seeds
    ]
    if sorted(r["seed"] for r in runs) != seeds:
        raise ValueError(f"{path}: expected one deepfm row for each seed {seeds}")
    summary = _auc_summary("cpu", runs)
    summary["source"] = f"recorded in {path}"
    return summary


def accuracy_variant(
    choice: str, cells: dict[str, Any], variants: dict[str, dict[str, Any]]
) -> tuple[str, str] | None:
    """The variant the accuracy check trains with: ``none``, a name in ``variants``, or
    ``auto``: the variant whose median samples/s over adrank's defaults has the highest
    geometric mean above 1 across the cells where it ran without an error (else none)."""
    if choice == "none":
        return None
    if choice != "auto":
        return choice, "asked for"
    best: tuple[float, str] | None = None
    for name in variants:
        ran = [c["variants"][name] for c in cells.values() if name in c.get("variants", {})]
        gains = [v["vs_defaults"] for v in ran]
        if not gains or any(v["errors"] for v in ran) or None in gains:
            continue
        mean = math.exp(statistics.fmean(math.log(g) for g in gains))
        if mean > 1.0 and (best is None or mean > best[0]):
            best = (mean, name)
    if best is None:
        return None
    return best[1], f"auto: {best[0]:.2f}x adrank's defaults (geometric mean over the cells)"
