"""Position-bias benchmark on semi-synthetic frappe logs (issue 15).

``python -m benchmarks.debias [--seeds 1 2 3] [--methods none feature pal kd ips dla]``

1. A *relevance model* (DeepFM with the shipped frappe config, seed 2021, at most 8 epochs,
   1 thread) is trained once on frappe into ``WORK/relevance-deepfm``.
2. Per seed, semi-synthetic position-biased logs (:mod:`adrank.debias.synthetic`, the
   parameters in :data:`SPEC`) are built from frappe's rows and that model's logits, exported
   as Parquet to ``WORK/logs-seed{S}`` and prepared for training.
3. Per (method, seed), a small DeepFM is trained on the logged clicks with
   ``train.position_method=METHOD`` (``none`` = position-blind) and scored, position-free,
   on the held-out test requests against clicks re-drawn with examination = 1
   (``click_unbiased``). The learned examination curve is recorded where there is one.

Every finished (method, seed) is one line of ``benchmarks/results/debias/position.jsonl``;
a re-run skips those (resumable). ``--report-only`` rewrites position.md / .csv / .png from
the lines. Each line records the load average: timings are not results here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from adrank.artifact import load_artifact
from adrank.config import TrainConfig, resolve_run_config
from adrank.data.batches import TensorData, table_to_batch
from adrank.data.datasets.base import get_dataset, resolve_data_dir
from adrank.data.datasets.frappe import FRAPPE_FIELDS
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.debias import POSITION_FIELD, build_position_method, build_position_model
from adrank.debias.synthetic import (
    PositionLogSpec,
    position_log_schema,
    simulate_position_logs,
    write_position_logs,
)
from adrank.metrics import auc, logloss
from adrank.pipeline import train_run
from adrank.train.evaluation import as_eval_loader, collect_predictions
from adrank.train.trainer import Trainer

logger = logging.getLogger("benchmarks.debias")

RESULTS = Path(__file__).resolve().parent / "results" / "debias"
METHODS = ("none", "feature", "pal", "kd", "ips", "dla")
SEEDS = (1, 2, 3)
#: the simulation's stated parameters (the seed is set per run)
SPEC = PositionLogSpec(list_size=10, temperature=3.0, policy_strength=0.7, examination_power=1.0)
#: the relevance model: frappe's shipped DeepFM config, capped at 8 epochs, 1 thread
RELEVANCE_OVERRIDES = [
    "train.num_threads=1", "train.max_epochs=8", "train.seed=2021", "train.progress=false",
]  # fmt: skip
#: the model every method trains (kept small: 18 runs on a shared 2-core machine)
MODEL = "deepfm"
MODEL_PARAMS: dict[str, Any] = {
    "embedding_dim": 10,
    "hidden_units": [64, 64],
    "net_dropout": 0.1,
    "batch_norm": False,
}
TRAIN: dict[str, Any] = {
    "batch_size": 4096,
    "learning_rate": 1e-3,
    "embedding_regularizer": 0.01,
    "max_epochs": 8,
    "patience": 2,
    "num_threads": 1,
    "progress": False,
}


def relevance_run(work: Path) -> Path:
    run_dir = work / "relevance-deepfm"
    if not (run_dir / "manifest.json").exists():
        config = resolve_run_config("frappe", "deepfm", overrides=RELEVANCE_OVERRIDES)
        train_run(config, run_dir, resume=(run_dir / "checkpoint.pt").exists())
    return run_dir


def relevance_logits(run_dir: Path, frames: dict[str, pl.DataFrame]) -> dict[str, np.ndarray]:
    """The relevance model's logit for every row of every split."""
    art = load_artifact(run_dir)
    out = {}
    for name, frame in frames.items():
        table = art.processor.transform(frame).to_arrow()
        batch = table_to_batch(table, art.feature_map)
        with torch.no_grad():
            out[name] = art.model(batch.features).double().numpy()
    return out


def prepared_logs(work: Path, seed: int) -> tuple[PreparedData, dict[str, pl.DataFrame]]:
    """The seed's logs (built and exported once) and their prepared form."""
    logs_dir, prep_dir = work / f"logs-seed{seed}", work / f"prepared-seed{seed}"
    spec = dataclasses.replace(SPEC, seed=seed)
    if not (logs_dir / "meta.json").exists():
        run_dir = relevance_run(work)
        frames = get_dataset("frappe").build_splits(resolve_data_dir())
        logits = relevance_logits(run_dir, frames)
        logs = simulate_position_logs(
            frames, logits, spec, group_column="user", drop_columns=["label"]
        )
        provenance = {"source": "frappe", "relevance_model": str(run_dir), "group_column": "user"}
        write_position_logs(logs, logs_dir, spec, provenance)
    logs = {s: pl.read_parquet(logs_dir / f"{s}.parquet") for s in ("train", "valid", "test")}
    if not (prep_dir / "stats.json").exists():
        prepare_frames(position_log_schema(FRAPPE_FIELDS), logs, prep_dir)
    return PreparedData.open(prep_dir), logs


def implied_curve(model: torch.nn.Module, data: TensorData, positions: int) -> np.ndarray:
    """Mean predicted probability with the position field set to k, over that at k = 1."""
    means = []
    for k in range(1, positions + 1):
        feats = dict(data.data.features)
        feats[POSITION_FIELD] = torch.full((len(data),), k, dtype=torch.long)
        with torch.no_grad():
            means.append(torch.sigmoid(model.inner(feats)).double().mean().item())
    return np.asarray(means) / means[0]


def run_one(method: str, seed: int, prepared: PreparedData, logs: dict) -> dict[str, Any]:
    torch.set_num_threads(1)
    fm = prepared.feature_map
    cfg = TrainConfig(**TRAIN, seed=seed, position_method=method, position_max=SPEC.list_size)
    torch.manual_seed(seed)
    model = build_position_model(MODEL, fm, MODEL_PARAMS, cfg)
    position = build_position_method(cfg, model, model_name=MODEL, params=MODEL_PARAMS)
    train = TensorData.from_parquet(prepared.splits["train"], fm)
    valid = TensorData.from_parquet(prepared.splits["valid"], fm)
    test = TensorData.from_parquet(prepared.splits["test"], fm)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = Trainer(model, cfg, position=position).fit(train, valid)
    seconds = time.perf_counter() - t0
    model.eval()
    probs = collect_predictions(model, as_eval_loader(test, 4096)).probs.reshape(-1)
    truth = logs["test"]
    unbiased = truth["click_unbiased"].to_numpy()
    logged = truth["click"].to_numpy()
    curve = None
    if position is not None and position.examination_curve() is not None:
        curve = position.examination_curve()
    elif method == "feature":
        curve = implied_curve(model, test, SPEC.list_size)
    elif method == "kd":
        position.teacher.eval()
        curve = implied_curve(position.teacher, test, SPEC.list_size)
    return {
        "method": method,
        "seed": seed,
        "auc_unbiased": auc(unbiased, probs),
        "logloss_unbiased": logloss(unbiased, probs),
        "corr_relevance": float(np.corrcoef(probs, truth["relevance"].to_numpy())[0, 1]),
        "mean_pred_over_ctr": float(probs.mean() / unbiased.mean()),
        "auc_logged": auc(logged, probs),
        "examination_curve": None if curve is None else [float(x) for x in curve],
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "seconds": seconds,
        "load_average_start": load_before,
        "load_average_end": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "spec": dataclasses.asdict(dataclasses.replace(SPEC, seed=seed)),
        "model": MODEL,
        "params": MODEL_PARAMS,
        "train": TRAIN,
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


LABELS = {
    "none": "position-blind (baseline)",
    "feature": "position as a feature (serve at 1)",
    "pal": "PAL",
    "kd": "position KD",
    "ips": "IPS (true examination, clip 0.05)",
    "dla": "DLA (pointwise)",
}
COLUMNS = ("auc_unbiased", "logloss_unbiased", "mean_pred_over_ctr", "corr_relevance", "auc_logged")


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    std = arr.std(ddof=1) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} ± {std:.4f}"


def report(rows: list[dict[str, Any]], out: Path) -> None:
    """position.md (mean ± std over seeds), position.csv (one row per run), position.png."""
    if not rows:
        return
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    truth = SPEC.examination_curve()
    lines = [
        "# Position-bias methods on semi-synthetic frappe logs",
        "",
        "**Semi-synthetic data**: real frappe feature rows; relevance, list placement, "
        "examination and clicks are simulated (`adrank.debias.synthetic`, "
        "`python -m benchmarks.debias`). Stated parameters: lists of "
        f"{SPEC.list_size} slots; true relevance r = sigmoid(logit(q) / {SPEC.temperature}) "
        "with q a DeepFM's frappe probability (shipped config, 8 epochs max, seed 2021); "
        f"logging policy: Plackett-Luce over exp(s), s = {SPEC.policy_strength} z + "
        f"sqrt(1 - {SPEC.policy_strength}^2) eps (z = standardized tempered relevance logit); "
        f"examination(k) = (1/k)^{SPEC.examination_power}; click = examined x Bernoulli(r). "
        "Seed s builds its own logs with seed s and trains with seed s.",
        "",
        f"Model: {MODEL} {json.dumps(MODEL_PARAMS)}; training {json.dumps(TRAIN)}; early "
        "stopping on the validation AUC against the *logged* clicks (all a practitioner has). "
        "Test: the held-out requests, scored position-free (the `feature` model at position "
        "1), against clicks re-drawn with examination = 1 (`click_unbiased`).",
        "",
        "| method | runs | AUC (unbiased clicks) | logloss (unbiased clicks) | mean pred / CTR "
        "| corr(pred, true r) | AUC (logged clicks) | best/run epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        cells = " | ".join(_mean_std([r[c] for r in sel]) for c in COLUMNS)
        epochs = ", ".join(f"{r['best_epoch']}/{r['epochs']}" for r in sel)
        lines.append(f"| {LABELS[m]} | {len(sel)} | {cells} | {epochs} |")
    lines += [
        "",
        "mean ± sample std over seeds. mean pred / CTR: the mean predicted probability over "
        "the mean unbiased click rate (1 = calibrated in the mean). corr(pred, true r): the "
        "Pearson correlation of the prediction with the simulated relevance. AUC (logged "
        f"clicks): against the position-biased test clicks. Epochs are capped at "
        f"{TRAIN['max_epochs']} (patience {TRAIN['patience']}).",
        "",
        "## Examination curves (relative to position 1; mean over seeds)",
        "",
        "| position | true | " + " | ".join(LABELS[m] for m in methods if _curves(rows, m)) + " |",
        "|---|---|" + "---|" * sum(1 for m in methods if _curves(rows, m)),
    ]
    curves = {m: np.mean(_curves(rows, m), axis=0) for m in methods if _curves(rows, m)}
    for k in range(SPEC.list_size):
        cells = " | ".join(f"{c[k]:.3f}" for c in curves.values())
        lines.append(f"| {k + 1} | {truth[k]:.3f} | {cells} |")
    lines += [
        "",
        "PAL and DLA learn the examination curve (position 1 fixed at 1); for the `feature` "
        "model and the KD teacher the curve is implied: the mean predicted probability on the "
        "test rows with the position set to k, over that at position 1 (it mixes examination "
        "with whatever else the model ties to the position). IPS is given the true curve.",
        "",
        "Load average while training (runs were sequential, 1 thread each): "
        + ", ".join(f"{r['load_average_start']:.1f}" for r in rows)
        + ". Timings are not results here.",
    ]
    tmp = out / ".position.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(out / "position.md")
    flat = [
        {k: v for k, v in r.items() if k in ("method", "seed", *COLUMNS, "best_epoch", "epochs")}
        | {
            f"exam_{k + 1}": (r["examination_curve"] or [None] * SPEC.list_size)[k]
            for k in range(SPEC.list_size)
        }
        for r in rows
    ]
    tmp = out / ".position.csv.tmp"
    pl.DataFrame(flat).write_csv(tmp)
    tmp.rename(out / "position.csv")
    _plot(curves, truth, out / "position.png")


def _curves(rows: list[dict[str, Any]], method: str) -> list[list[float]]:
    return [
        r["examination_curve"] for r in rows if r["method"] == method and r["examination_curve"]
    ]


def _plot(curves: dict[str, np.ndarray], truth: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    positions = np.arange(1, len(truth) + 1)
    ax.plot(positions, truth, "k-o", lw=2, label="true examination")
    for m, c in curves.items():
        ax.plot(positions, c, "--.", label=LABELS[m])
    ax.set_xlabel("position")
    ax.set_ylabel("examination relative to position 1")
    ax.set_title("Recovered examination curves (semi-synthetic frappe logs)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(".position.png.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.rename(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/adrank/debias")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = args.out / "position.jsonl"
    if not args.report_only:
        done = {(r["method"], r["seed"]) for r in read_rows(lines)}
        for seed in args.seeds:
            prepared, logs = prepared_logs(args.work, seed)
            for method in args.methods:
                if (method, seed) in done:
                    continue
                row = run_one(method, seed, prepared, logs)
                with open(lines, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("method", "seed", "auc_unbiased")}))
                report(read_rows(lines), args.out)
    report(read_rows(lines), args.out)


if __name__ == "__main__":
    main()
