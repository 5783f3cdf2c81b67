"""Training throughput on frappe: adrank vs DeepCTR-Torch, torch-rechub and a pure-PyTorch floor.

    python -m benchmarks train [--quick] [--converge] [--models deepfm,dcnv2,finalmlp]
        [--frameworks adrank,floor,deepctr_torch,torch_rechub] [--epochs 3] [--repeats 3]
        [--threads N] [--scratch benchmarks/.scratch] [--resume]

Protocol (identical for every framework):

* data: the prepared ``frappe`` splits (``prepare_dataset``), exported once as encoded ids
  to ``<scratch>/train_speed/frappe_ids.npz``; every framework trains on exactly these ids;
* model: the BARS Frappe config (``configs/models/frappe/<model>.yaml``): emb 10,
  batch 4096, Adam lr 1e-3, embedding regularizer 0.05 (each framework's equivalent);
* each *run* trains a fresh model for ``--epochs`` epochs (no validation, no early stopping,
  no LR decay) and scores the test split after the last epoch. Epoch 1 is warm-up; the
  run's throughput is train rows x (epochs - 1) / (time of epochs 2..E), training steps
  only. Runs use seeds ``seed, seed + 1, ...``; we report the median throughput over
  ``--repeats`` runs and the test AUC mean +- std, so AUCs compare at equal epochs;
* ``--converge`` instead trains every run to convergence under the BARS protocol (validation
  AUC after each epoch, LR x 0.1 after each non-improving one, stop after the config's
  patience, at most ``--epochs`` = 100, best epoch's weights restored), the same for every
  framework (adrank's ``Trainer``; ``peers/common.py::fit_epochs`` around the others' epoch
  calls), and scores the test split with the restored weights. Three-epoch AUCs swing by
  +-0.003 between seeds (DCNv2), so equal accuracy is judged on converged AUCs;
* with DeepCTR-Torch in the run, ``peers/parity.py`` checks that its DeepFM and DCN networks
  compute the floor's function (same weights -> same probabilities and gradients);
* every run (one framework, one seed) is its own subprocess with the same
  ``torch.set_num_threads`` (and ``OMP_NUM_THREADS``); ``--order interleaved`` (default)
  runs them round-robin over the frameworks per seed, and "adrank ÷ this" is the median of
  the per-seed ratios, because these 2-core VMs drift by 10-20 % over minutes (two
  back-to-back runs of the grouped order put FinalMLP's adrank/floor ratio at 1.00 and
  0.82); ``--order grouped`` runs each framework's seeds back to back; peers run in
  ``benchmarks/.peers-venv`` (created on first use: torch==2.13.0 CPU first, then
  deepctr-torch==0.3.0 and torch-rechub==0.9.0).

Floor = ``benchmarks/peers/floor.py`` (hand-written networks and loop, no adrank import).
Results: ``benchmarks/results/train_speed.{json,md}`` (``train_speed_converged`` with
--converge, ``_quick`` appended with --quick).
Finished runs are kept per (framework, model) cell in ``<scratch>/train_speed/cells/``,
written after every run; ``--resume`` reuses the runs of cells whose spec is unchanged and
runs only the missing seeds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "peers"
DEFAULT_SCRATCH = Path(__file__).resolve().parent / ".scratch"
DEFAULT_VENV = Path(__file__).resolve().parent / ".peers-venv"
MODELS = ("deepfm", "dcnv2", "finalmlp")
FRAMEWORKS = ("adrank", "floor", "deepctr_torch", "torch_rechub")
PEER_SCRIPTS = {
    "floor": "floor.py",
    "deepctr_torch": "deepctr_torch_run.py",
    "torch_rechub": "rechub_run.py",
    "parity": "parity.py",
}
#: models whose DeepCTR-Torch network is checked against the floor's (``peers/parity.py``)
PARITY_MODELS = ("deepfm", "dcnv2")
PEER_PACKAGES = ("deepctr-torch==0.3.0", "torch-rechub==0.9.0")
#: what the peers import besides torch (deepctr_torch imports requests at import time)
PEER_EXTRAS = ("scikit-learn", "pandas", "tqdm", "requests")


def default_data_dir() -> str | None:
    if os.environ.get("ADRANK_DATA_DIR"):
        return os.environ["ADRANK_DATA_DIR"]
    shared = ROOT.parent / "shared" / "data"
    return str(shared) if (shared / "README.md").exists() else None


# ----------------------------------------------------------------------- data export ----
def export_ids(path: Path, data_dir: str | None, max_train_rows: int | None) -> dict[str, Any]:
    """Write the prepared frappe splits as (N, F) int64 ids + float32 labels to ``path``."""
    import numpy as np
    import pyarrow.parquet as pq

    from adrank.data.prepare import prepare_dataset

    prepared = prepare_dataset("frappe", data_dir=data_dir)
    fm = prepared.feature_map
    if any(f.kind != "categorical" for f in fm.fields):
        raise ValueError("train_speed expects an all-categorical feature map (frappe)")
    arrays: dict[str, Any] = {
        "fields": np.array(fm.names),
        "vocab_sizes": np.array([f.vocab_size for f in fm.fields], dtype=np.int64),
    }
    for split in ("train", "valid", "test"):
        table = pq.read_table(prepared.splits[split])
        x = np.stack([table.column(n).to_numpy() for n in fm.names], axis=1).astype(np.int64)
        y = table.column(fm.labels[0]).to_numpy().astype(np.float32)
        if split == "train" and max_train_rows:
            x, y = x[:max_train_rows], y[:max_train_rows]
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return {"prepared": str(prepared.directory), "train_rows": len(arrays["train_y"])}


# --------------------------------------------------------------------- adrank worker ----
def adrank_worker(spec_path: str) -> None:
    """Run the adrank side of one cell (called in a subprocess: ``--worker SPEC``)."""
    import numpy as np
    import torch

    from adrank.config import TrainConfig
    from adrank.data.batches import Batch, TensorData
    from adrank.data.feature_map import FeatureMap, FieldInfo
    from adrank.models.registry import build_model
    from adrank.train.trainer import Trainer

    spec = json.loads(Path(spec_path).read_text())
    with np.load(spec["data"]) as z:
        data = {k: z[k] for k in z.files}
    names = [str(n) for n in data["fields"]]
    fm = FeatureMap(
        fields=tuple(
            FieldInfo(n, "categorical", int(v), 0, n, None)
            for n, v in zip(names, data["vocab_sizes"], strict=True)
        ),
        labels=("label",),
    )

    def tensors(split: str) -> TensorData:
        x = torch.from_numpy(data[f"{split}_x"])
        y = torch.from_numpy(data[f"{split}_y"]).float().unsqueeze(1)
        return TensorData(Batch({n: x[:, i].contiguous() for i, n in enumerate(names)}, y))

    train, valid, test = tensors("train"), tensors("valid"), tensors("test")
    converge = bool(spec.get("converge"))
    runs = []
    for r in range(spec["repeats"]):
        seed = spec["seed"] + r
        torch.manual_seed(seed)
        model = build_model(spec["model"], fm, **spec["params"])
        cfg = TrainConfig(
            batch_size=spec["batch_size"],
            learning_rate=spec["learning_rate"],
            embedding_regularizer=spec["embedding_regularizer"],
            grad_clip_norm=spec["grad_clip_norm"],
            max_epochs=spec["epochs"],
            patience=spec.get("patience", 2) if converge else spec["epochs"] + 1,
            seed=seed,
            num_threads=spec["threads"],
            progress=False,
        )
        result = Trainer(model, cfg).fit(train, valid if converge else None, test)
        runs.append(
            {
                "seed": seed,
                "epoch_train_s": [h["train_time_s"] for h in result.history],
                "train_rows": len(train),
                "test_auc": (result.test or {}).get("auc"),
                "test_logloss": (result.test or {}).get("logloss"),
                "best_epoch": result.best_epoch if converge else len(result.history),
                "valid_auc": result.best_valid.get("auc") if converge else None,
            }
        )
    import adrank

    payload = {"framework": "adrank", "model": spec["model"], "runs": runs}
    payload["versions"] = {"adrank": adrank.__version__, "torch": torch.__version__}
    payload["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(payload), flush=True)


# ------------------------------------------------------------------------ peers venv ----
def peers_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peers_venv(venv: Path) -> Path:
    """Create the peers' venv if needed: torch==2.13.0 (CPU) first, then the peers."""
    py = peers_python(venv)
    check = [str(py), "-c", "import deepctr_torch, torch_rechub, torch, sklearn, pandas"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    print(f"creating peers venv {venv} (torch==2.13.0 first, then {PEER_PACKAGES})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *PEER_PACKAGES, *PEER_EXTRAS], check=True)
    subprocess.run(check, check=True)
    return py


# ------------------------------------------------------------------------ run a cell ----
def run_cell(framework: str, spec: dict[str, Any], cell_dir: Path, venv: Path) -> dict[str, Any]:
    cell_dir.mkdir(parents=True, exist_ok=True)
    spec_path = cell_dir / f"{framework}-{spec['model']}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    if framework == "adrank":
        cmd = [sys.executable, "-m", "benchmarks.train_speed", "--worker", str(spec_path)]
    elif framework == "floor":
        cmd = [sys.executable, str(PEERS_DIR / "floor.py"), str(spec_path)]
    else:
        try:
            py = ensure_peers_venv(venv)
        except (OSError, subprocess.CalledProcessError) as exc:
            return {"framework": framework, "model": spec["model"], "runs": [], "error": str(exc)}
        cmd = [str(py), str(PEERS_DIR / PEER_SCRIPTS[framework]), str(spec_path)]
    env = dict(os.environ)
    threads = str(spec["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        return {"framework": framework, "model": spec["model"], "runs": [], "error": tail}
    out = json.loads(lines[-1][len("RESULT ") :])
    out["wall_s"] = time.perf_counter() - t0
    return out


def cell_key(spec: dict[str, Any]) -> str:
    """Cache key of a (framework, model) cell: the spec without its repeat count, so that
    ``--resume`` with more ``--repeats`` runs only the seeds a cell lacks."""
    keyed = {k: v for k, v in spec.items() if k != "repeats"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


ORDERS = ("interleaved", "grouped")


def run_order(frameworks: list[str], seeds: list[int], order: str) -> list[tuple[str, int]]:
    """The (framework, seed) runs of one model, in the order they run.

    ``interleaved`` (the default): every framework's seed-2021 run, then every framework's
    seed-2022 run, ... The 2-core VMs this runs on drift by 10-20 % over minutes, so runs of
    one framework back to back can all land in a slow spell; round-robin puts each seed's
    runs of all frameworks minutes apart, and the paired per-seed ratios cancel the drift.
    ``grouped``: all of one framework's seeds, then the next framework's (the old order).
    """
    if order == "interleaved":
        return [(fw, seed) for seed in seeds for fw in frameworks]
    if order == "grouped":
        return [(fw, seed) for fw in frameworks for seed in seeds]
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def rate(run: dict[str, Any]) -> float:
    """A run's training samples/s over epochs 2..E (epoch 1 is warm-up)."""
    times = run["epoch_train_s"]
    timed = times[1:] if len(times) > 1 else times
    return run["train_rows"] * len(timed) / sum(timed)


def paired_ratios(
    summaries: dict[str, dict[str, Any]], cells: dict[str, dict[str, Any]], model: str
) -> None:
    """Add, to each non-adrank framework's summary, adrank's samples/s over its own for
    every seed both ran (``paired_ratios``) and their median (``paired_ratio``)."""
    base = {r["seed"]: rate(r) for r in cells.get(f"adrank/{model}", {}).get("runs") or []}
    for fw, summary in summaries.items():
        if fw == "adrank" or not summary.get("available"):
            continue
        runs = cells.get(f"{fw}/{model}", {}).get("runs") or []
        ratios = [base[r["seed"]] / rate(r) for r in runs if r["seed"] in base]
        if ratios:
            summary["paired_ratios"] = ratios
            summary["paired_ratio"] = statistics.median(ratios)


def summarize(cell: dict[str, Any]) -> dict[str, Any]:
    """Median samples/s over runs (epochs 2..E of each run), test AUC mean/std."""
    runs = cell.get("runs") or []
    if not runs:
        return {"available": False, "reason": cell.get("unavailable") or cell.get("error", "")}
    rates = [rate(r) for r in runs]
    aucs = [r["test_auc"] for r in runs if r["test_auc"] is not None]
    sps = statistics.median(rates)
    return {
        "available": True,
        "samples_per_s": sps,
        "samples_per_s_runs": rates,
        "epoch_s": runs[0]["train_rows"] / sps,
        "test_auc_mean": statistics.fmean(aucs) if aucs else None,
        "test_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
        "test_aucs": aucs,
        "test_logloss_mean": statistics.fmean([r["test_logloss"] for r in runs]),
        "epochs_mean": statistics.fmean([len(r["epoch_train_s"]) for r in runs]),
        "runs": len(runs),
    }


def order_text(order: str) -> str:
    if order == "interleaved":
        return (
            "each in its own process, round-robin over the frameworks per seed (every "
            "framework's first seed, then every framework's second, ...), so that the "
            "machine's drift hits all alike. adrank ÷ this is the median over seeds of "
            "adrank's samples/s over this framework's in the same round (range in brackets)."
        )
    return (
        "each framework's runs back to back, one framework after another; adrank ÷ this is "
        "the ratio of the median samples/s."
    )


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    if cfg.get("converge"):
        schedule = (
            f"each run trained to convergence (validation AUC after every epoch, LR x 0.1 on "
            f"plateau, patience {cfg.get('patience', 2)}, at most {cfg['epochs']} epochs, best "
            f"epoch's weights restored; epoch 1 = warm-up); median of {cfg['repeats']} runs; "
            "test AUC of the restored weights"
        )
    else:
        schedule = (
            f"{cfg['epochs']} epochs per run (epoch 1 = warm-up), median of {cfg['repeats']} "
            f"runs; test AUC after {cfg['epochs']} epochs"
        )
    lines = [
        f"Training throughput on frappe ({cfg['train_rows']:,} train rows), batch "
        f"{cfg['batch_size']}, emb 10, {cfg['threads']} threads, {schedule} (mean ± std over "
        "the runs' seeds).\n",
        f"Runs: {order_text(cfg.get('order', 'grouped'))}\n",
        "| model | framework | samples/s | epoch s | epochs | test AUC | adrank ÷ this "
        "| ΔAUC (adrank − this) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, cells in results["models"].items():
        base = cells.get("adrank", {})
        for fw, s in cells.items():
            if not s.get("available"):
                reason = str(s.get("reason", "")).strip().splitlines()
                lines.append(f"| {model} | {fw} | n/a | | | | | {reason[-1] if reason else ''} |")
                continue
            ratio = dauc = ""
            if base.get("available") and fw != "adrank":
                ratio = f"{base['samples_per_s'] / s['samples_per_s']:.2f}×"
                if s.get("paired_ratios"):
                    lo, hi = min(s["paired_ratios"]), max(s["paired_ratios"])
                    ratio = f"{s['paired_ratio']:.2f}× ({lo:.2f}–{hi:.2f})"
                if base["test_auc_mean"] is not None and s["test_auc_mean"] is not None:
                    dauc = f"{base['test_auc_mean'] - s['test_auc_mean']:+.4f}"
            auc = (
                f"{s['test_auc_mean']:.4f} ± {s['test_auc_std']:.4f}"
                if s["test_auc_mean"] is not None
                else ""
            )
            lines.append(
                f"| {model} | {fw} | {s['samples_per_s']:,.0f} | {s['epoch_s']:.2f} "
                f"| {s.get('epochs_mean', 0):.1f} | {auc} "
                f"| {ratio} | {dauc} |"
            )
    parity = results.get("parity") or {}
    if parity:
        lines.append(
            "\nNetwork parity (`benchmarks/peers/parity.py`: DeepCTR-Torch's network with its "
            "weights copied into the floor's, dropout off, one 4096-row batch in train mode):\n"
        )
        lines.append(
            "| model | max abs Δ probability | Δ loss | embedding grad rel Δ "
            "| DNN layer-1 grad rel Δ |"
        )
        lines.append("|---|---|---|---|---|")
        for model, r in parity.items():
            if "max_abs_prob_diff" not in r:
                lines.append(f"| {model} | n/a | | | {str(r.get('error', ''))[-200:]} |")
                continue
            g = r["grad_rel_diff"]
            lines.append(
                f"| {model} | {r['max_abs_prob_diff']:.1e} | {r['loss_diff']:.1e} "
                f"| {g['embedding']:.1e} | {g['dnn_layer_1']:.1e} |"
            )
    lines.append(
        "\nadrank = `Trainer` over `InMemoryLoader`; floor = hand-written network and loop "
        "over in-memory tensors (`benchmarks/peers/floor.py`); peers = their own fit loops "
        "(`benchmarks/peers/`). Throughput counts training steps only (no evaluation)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default 3; --converge: max, 100)"
    )
    parser.add_argument(
        "--converge",
        action="store_true",
        help="train every run to convergence (BARS protocol) and compare converged test AUCs",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="interleaved",
        help="interleaved: round-robin over frameworks per seed (default); grouped: one "
        "framework's seeds back to back",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--peers-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--max-train-rows", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="reuse finished cells")
    parser.add_argument(
        "--quick", action="store_true", help="validation: 2 epochs x 1 run on 20k rows"
    )
    args = parser.parse_args(argv)
    if args.worker:
        adrank_worker(args.worker)
        return
    if args.epochs is None:
        args.epochs = 100 if args.converge else 3
    if args.quick:
        args.epochs, args.repeats = 2, 1
        args.max_train_rows = args.max_train_rows or 20_000
    models = [m for m in args.models.split(",") if m]
    frameworks = [f for f in args.frameworks.split(",") if f]
    bad = sorted(set(models) - set(MODELS)) + sorted(set(frameworks) - set(FRAMEWORKS))
    if bad:
        raise SystemExit(f"unknown model/framework {bad}; models {MODELS}, frameworks {FRAMEWORKS}")

    from adrank.config import resolve_run_config
    from adrank.utils import atomic_write_text

    work = args.scratch / "train_speed"
    npz = work / ("frappe_ids_quick.npz" if args.quick else "frappe_ids.npz")
    info = export_ids(npz, args.data_dir, args.max_train_rows)
    print(f"data: {info['train_rows']:,} train rows from {info['prepared']}", flush=True)
    results: dict[str, Any] = {"models": {}, "cells": {}}
    patience: dict[str, int] = {}
    for model in models:
        run_cfg = resolve_run_config("frappe", model)
        patience[model] = run_cfg.train.patience
        spec = {
            "model": model,
            "params": run_cfg.params,
            "data": str(npz.resolve()),
            "epochs": args.epochs,
            "batch_size": run_cfg.train.batch_size,
            "learning_rate": run_cfg.train.learning_rate,
            "embedding_regularizer": run_cfg.train.embedding_regularizer,
            "grad_clip_norm": run_cfg.train.grad_clip_norm,
            "seed": args.seed,
            "threads": args.threads,
            "repeats": args.repeats,
            "train_rows": info["train_rows"],
        }
        if args.converge:
            spec.update(converge=True, patience=run_cfg.train.patience)
        key = cell_key(spec)
        wanted = list(range(args.seed, args.seed + args.repeats))
        cells: dict[str, dict[str, Any] | None] = {}
        for fw in frameworks:
            done = work / "cells" / f"{fw}-{model}-{key}.json"
            cells[fw] = json.loads(done.read_text()) if args.resume and done.exists() else None
        for fw, seed in run_order(frameworks, wanted, args.order):
            cell = cells[fw]
            if cell is not None and (
                cell.get("unavailable")
                or cell.get("error")
                or any(r["seed"] == seed for r in cell.get("runs") or [])
            ):
                continue  # finished (or this framework cannot run the model)
            print(f"{model}/{fw}: seed {seed}", flush=True)
            one = {**spec, "seed": seed, "repeats": 1}
            new = run_cell(fw, one, work / "cells", args.peers_venv)
            runs = [*(cell or {}).get("runs", []), *new.get("runs", [])]
            cell = {**new, "runs": runs}
            cells[fw] = cell
            if runs or cell.get("unavailable"):
                # a failed run's error stays in memory (this invocation skips the
                # framework's other seeds) but not on disk, so --resume retries it
                kept = {k: v for k, v in cell.items() if k != "error"}
                atomic_write_text(
                    work / "cells" / f"{fw}-{model}-{key}.json", json.dumps(kept, indent=2)
                )
            if new.get("runs"):
                r = new["runs"][-1]
                print(f"  {rate(r):,.0f} samples/s, test AUC {r['test_auc']}", flush=True)
            else:
                reason = new.get("unavailable") or str(new.get("error", "")).strip()[-400:]
                print(f"  unavailable: {reason}", flush=True)
        results["models"][model] = {}
        for fw in frameworks:
            cell = cells[fw] or {"runs": [], "error": "not run"}
            cell = {
                **cell,
                "runs": sorted(
                    (r for r in cell.get("runs") or [] if r["seed"] in wanted),
                    key=lambda r: r["seed"],
                ),
            }
            results["models"][model][fw] = summarize(cell)
            results["cells"][f"{fw}/{model}"] = cell
        paired_ratios(results["models"][model], results["cells"], model)
        if "deepctr_torch" in frameworks and model in PARITY_MODELS:
            parity = run_cell("parity", spec, work / "cells", args.peers_venv)
            results.setdefault("parity", {})[model] = parity
            print(f"  network parity vs floor: {parity}", flush=True)
    results["config"] = {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": args.threads,
        "batch_size": 4096,
        "train_rows": info["train_rows"],
        "quick": args.quick,
        "seed": args.seed,
        "converge": args.converge,
        "order": args.order,
        "patience": "/".join(sorted({str(p) for p in patience.values()})),
    }
    md = markdown(results)
    name = "train_speed" + ("_converged" if args.converge else "")
    path = write_results(name + ("_quick" if args.quick else ""), results, md)
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
