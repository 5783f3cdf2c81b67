"""A peer's DIN on adrank's exact ``movielens_100k`` split, beside the sequence leaderboard.

    python -m benchmarks.sequence_peer [--seeds 2021,2022,2023] [--threads 1] [--jobs 1]
        [--peers-venv benchmarks/.peers-venv] [--scratch benchmarks/.scratch] [--export-only]

1. **Export.** :func:`export_sequence_splits` writes adrank's prepared splits (the rows and
   encoded ids ``adrank benchmark --dataset movielens_100k`` trains and scores on, from
   :func:`adrank.data.prepare.prepare_dataset`) as one ``.npz`` per split,
   ``<scratch>/sequence_peer/<dataset>_<split>.npz``:

   * ``fields`` (F,) names of the categorical fields, ``vocab_sizes`` (F,); ``x`` (N, F)
     int64 ids in that order;
   * ``sequences`` (S,) the history fields (the history that declares a target first, then
     the sequences aligned with it), ``sequence_tables`` (S,) the field whose embedding
     table each shares (``hist_item_id`` -> ``item_id``), ``max_len``; ``seq_<name>``
     (N, L) int64 ids exactly as adrank reads them (0 = padding; movielens_100k pads on
     the left, newest behaviour last), ``hist_len`` (N,) the number of real behaviours;
   * ``target`` (N,) the target item id (the history's ``target`` field), ``y`` (N,) float32
     the task's label (``like``), ``group`` (N,) int64 adrank's gAUC group column (the
     ``group`` role, a hash of the raw ``user_id``; metrics are grouped by it exactly as
     adrank's are), ``user`` (N,) the encoded ``user_id``.

2. **Run.** ``benchmarks/peers/din_run.py`` (DeepCTR-Torch 0.3.0's ``DIN``) in the peers'
   venv (:func:`benchmarks.train_speed.ensure_peers_venv`: torch==2.13.0 CPU first, then the
   peers), one subprocess per seed with ``OMP_NUM_THREADS=--threads``, adrank's
   ``configs/models/<dataset>/din.yaml`` sizes and training settings, the BARS converge
   protocol (``peers/common.py::fit_epochs``: validation AUC per epoch, LR x 0.1 on plateau,
   stop after the config's patience, best epoch restored). Finished seeds are kept in
   ``<scratch>/sequence_peer/cells/`` and reused (the command resumes).

3. **Report.** ``benchmarks/results/sequences/peer_din.{json,md}``: the peer's test AUC,
   logloss and gAUC per seed and mean ± std, next to adrank's ``din@like`` rows of
   ``benchmarks/results/sequences/runs.jsonl`` when present.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adrank.utils import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "peers"
DEFAULT_SCRATCH = Path(__file__).resolve().parent / ".scratch"
DEFAULT_VENV = Path(__file__).resolve().parent / ".peers-venv"
RESULTS = Path(__file__).resolve().parent / "results" / "sequences"
SPLITS = ("train", "valid", "test")
METRICS = ("test_auc", "test_logloss", "test_gauc")


def default_data_dir() -> str | None:
    if os.environ.get("ADRANK_DATA_DIR"):
        return os.environ["ADRANK_DATA_DIR"]
    shared = ROOT.parent / "shared" / "data"
    return str(shared) if (shared / "README.md").exists() else None


# ----------------------------------------------------------------------- data export ----
def history_fields(feature_map: Any) -> list[str]:
    """The history that declares a ``target`` and the sequences aligned with it, in
    feature-map order (``[hist_item_id, hist_genre]`` for movielens_100k)."""
    sequences = [f for f in feature_map.fields if f.kind == "sequence"]
    main = next((f for f in sequences if f.target and not f.aligned_with), None)
    if main is None:
        raise ValueError(
            f"no sequence field declares a target: {[f.name for f in sequences]} "
            "(the peer's DIN needs a history and its target item)"
        )
    return [main.name, *(f.name for f in sequences if f.aligned_with == main.name)]


def history_lengths(ids: Any) -> Any:
    """(N,) number of real behaviours of each (N, L) padded row; raises if a row's padding
    (id 0) is not one contiguous block at its start or end (the peers mask by length)."""
    import numpy as np

    real = ids != 0
    lengths = real.sum(axis=1)
    if real.size:
        left = real[:, ::-1].cumprod(axis=1).sum(axis=1) == lengths  # real ones at the end
        right = real.cumprod(axis=1).sum(axis=1) == lengths  # real ones at the start
        bad = np.flatnonzero(~(left | right))
        if bad.size:
            raise ValueError(f"row {int(bad[0])}: padding inside the history {ids[bad[0]]}")
    return lengths.astype(np.int64)


def export_sequence_splits(
    out_dir: Path,
    dataset: str = "movielens_100k",
    task: str = "like",
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Write ``<out_dir>/<dataset>_<split>.npz`` for train/valid/test (layout: module
    docstring) from adrank's prepared splits; returns ``{"paths", "rows", "prepared"}``."""
    import numpy as np
    import pyarrow.parquet as pq

    from adrank.data.prepare import prepare_dataset

    prepared = prepare_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir)
    fm = prepared.feature_map
    labels = {t.name: t.label for t in fm.tasks}
    if task not in labels:
        raise ValueError(f"{dataset} has no task {task!r} (tasks: {sorted(labels)})")
    hist = history_fields(fm)
    main = fm.field(hist[0])
    fields = [f for f in fm.fields if f.kind == "categorical"]
    others = [f.name for f in fm.fields if f.kind not in ("categorical", "sequence")]
    if others or len(hist) != sum(f.kind == "sequence" for f in fm.fields):
        raise ValueError(
            f"{dataset}: the export covers categorical fields and one history (with its "
            f"aligned sequences); also found {others or 'other sequences'}"
        )
    group = fm.roles["group"].column if "group" in fm.roles else "user_id"
    meta = {
        "fields": np.array([f.name for f in fields]),
        "vocab_sizes": np.array([f.vocab_size for f in fields], dtype=np.int64),
        "sequences": np.array(hist),
        "sequence_tables": np.array([fm.field(n).table for n in hist]),
        "sequence_vocab_sizes": np.array([fm.field(n).vocab_size for n in hist], dtype=np.int64),
        "max_len": np.array(main.max_len, dtype=np.int64),
        "target_field": np.array(str(main.target)),
        "task": np.array(task),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows = {}, {}
    for split in SPLITS:
        table = pq.read_table(prepared.splits[split])
        arrays: dict[str, Any] = dict(meta)
        columns = [table.column(f.name).to_numpy() for f in fields]
        arrays["x"] = np.stack(columns, axis=1).astype(np.int64)
        for name in hist:
            column = table.column(name).combine_chunks()
            width = fm.field(name).max_len
            arrays[f"seq_{name}"] = (
                column.values.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, width)
            )
        arrays["hist_len"] = history_lengths(arrays[f"seq_{hist[0]}"])
        arrays["target"] = table.column(str(main.target)).to_numpy().astype(np.int64)
        arrays["y"] = table.column(labels[task]).to_numpy().astype(np.float32)
        arrays["group"] = table.column(group).to_numpy().astype(np.int64)
        arrays["user"] = (
            table.column("user_id").to_numpy().astype(np.int64)
            if "user_id" in table.column_names
            else arrays["group"]
        )
        path = out_dir / f"{dataset}_{split}.npz"
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        paths[split], rows[split] = str(path.resolve()), len(arrays["y"])
    return {"paths": paths, "rows": rows, "prepared": str(prepared.directory)}


# --------------------------------------------------------------------------- running ----
def run_seed(spec: dict[str, Any], cells: Path, venv: Path) -> dict[str, Any]:
    """One seed of the peer's DIN in its own process; the parsed ``RESULT`` line (cached)."""
    from benchmarks.train_speed import ensure_peers_venv

    cells.mkdir(parents=True, exist_ok=True)
    done = cells / f"din-seed{spec['seed']}.json"
    if done.exists():
        cached = json.loads(done.read_text())
        if cached.get("spec") == spec:
            print(f"seed {spec['seed']}: reused {done}", flush=True)
            return cached
    spec_path = cells / f"din-seed{spec['seed']}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    py = ensure_peers_venv(venv)
    env = dict(os.environ)
    threads = str(spec["threads"])
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = [str(py), str(PEERS_DIR / "din_run.py"), str(spec_path)]
    print(f"seed {spec['seed']}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"din_run.py seed {spec['seed']} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["spec"] = spec
    atomic_write_text(done, json.dumps(out, indent=2))
    return out


def adrank_din_rows(path: Path, model: str = "din@like") -> list[dict[str, Any]]:
    """adrank's leaderboard rows of ``model`` (one per seed, the last one wins)."""
    if not path.exists():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("model") == model:
            rows[int(row["seed"])] = row
    return [rows[s] for s in sorted(rows)]


def mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarize(runs: list[dict[str, Any]], adrank_rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": {m: mean_std([r[m] for r in runs]) for m in METRICS}}
    if adrank_rows:
        out["adrank"] = {
            "test_auc": mean_std([r["test_auc"] for r in adrank_rows]),
            "test_logloss": mean_std([r["test_logloss"] for r in adrank_rows]),
            "test_gauc": mean_std([r["metrics"]["gauc"] for r in adrank_rows]),
        }
    return out


def markdown(payload: dict[str, Any]) -> str:
    s, cfg = payload["summary"], payload["config"]
    peer = f"{payload['peer']} {payload['peer_version']}"

    def cell(d: dict[str, float]) -> str:
        return f"{d['mean']:.4f} ± {d['std']:.4f}"

    lines = [
        f"DIN on `{cfg['dataset']}` (task `{cfg['task']}`), the identical exported split "
        f"({cfg['rows']['train']:,} / {cfg['rows']['valid']:,} / {cfg['rows']['test']:,} rows), "
        f"seeds {', '.join(str(r['seed']) for r in payload['runs'])}, {cfg['threads']} thread; "
        "mean ± std (sample std) over the seeds. Converge protocol: validation AUC after each "
        f"epoch, LR × 0.1 on plateau, patience {cfg['patience']}, best epoch restored.\n",
        "| framework | test AUC | test logloss | test gAUC (by user) | seeds |",
        "|---|---|---|---|---|",
    ]
    if "adrank" in s:
        a = s["adrank"]
        lines.append(
            f"| adrank `din@like` (runs.jsonl) | {cell(a['test_auc'])} "
            f"| {cell(a['test_logloss'])} | {cell(a['test_gauc'])} "
            f"| {len(payload['adrank_runs'])} |"
        )
    p = s["peer"]
    lines.append(
        f"| {peer} `DIN` | {cell(p['test_auc'])} | {cell(p['test_logloss'])} "
        f"| {cell(p['test_gauc'])} | {len(payload['runs'])} |"
    )
    lines += ["", "Per seed (peer):", "", "| seed | test AUC | logloss | gAUC | best epoch |"]
    lines.append("|---|---|---|---|---|")
    for r in payload["runs"]:
        lines.append(
            f"| {r['seed']} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} "
            f"| {r['test_gauc']:.4f} | {r['best_epoch']} of {r['epochs']} |"
        )
    params = {r.get("num_parameters") for r in payload["runs"]}
    ours = {r.get("num_parameters") for r in payload["adrank_runs"]}
    if len(params) == 1 and None not in params:
        lines += ["", f"Parameters: peer {params.pop():,}"]
        if len(ours) == 1 and None not in ours:
            lines[-1] += f", adrank {ours.pop():,}"
        lines[-1] += "."
    lines += ["", "Differences from adrank's DIN (`configs/models/movielens_100k/din.yaml`):", ""]
    lines += [f"- {d}" for d in payload["differences"]]
    seeds = ",".join(str(r["seed"]) for r in payload["runs"])
    lines += [
        "",
        f"Command: `python -m benchmarks.sequence_peer --seeds {seeds} --threads "
        f"{cfg['threads']}` (peer in `benchmarks/.peers-venv`: torch "
        f"{payload['versions'].get('torch')}, {peer}; adrank's rows come from "
        "`adrank benchmark`'s `runs.jsonl`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens_100k")
    parser.add_argument("--task", default="like")
    parser.add_argument("--seeds", default="2021,2022,2023")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side")
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--peers-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--export-only", action="store_true")
    args = parser.parse_args(argv)

    from adrank.config import resolve_run_config

    work = args.scratch / "sequence_peer"
    info = export_sequence_splits(work, args.dataset, args.task, args.data_dir)
    print(f"exported {info['rows']} rows from {info['prepared']} to {work}", flush=True)
    if args.export_only:
        return
    cfg = resolve_run_config(args.dataset, "din")
    train = cfg.train
    base = {
        "model": "din",
        "params": cfg.params,
        "data": info["paths"],
        "epochs": args.max_epochs or train.max_epochs,
        "batch_size": train.batch_size,
        "eval_batch_size": train.eval_batch_size,
        "learning_rate": train.learning_rate,
        "embedding_regularizer": train.embedding_regularizer,
        "net_regularizer": train.net_regularizer,
        "grad_clip_norm": train.grad_clip_norm,
        "threads": args.threads,
        "repeats": 1,
        "converge": True,
        "patience": train.patience,
    }
    seeds = [int(s) for s in args.seeds.split(",") if s]
    specs = [{**base, "seed": seed} for seed in seeds]
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        outs = list(pool.map(lambda s: run_seed(s, work / "cells", args.peers_venv), specs))
    # epoch times are left out: this benchmark measures accuracy, not speed
    runs = [
        {**{k: v for k, v in r.items() if k != "epoch_train_s"}, "epochs": len(r["epoch_train_s"])}
        for out in outs
        for r in out["runs"]
    ]
    adrank_rows = adrank_din_rows(args.output / "runs.jsonl", f"din@{args.task}")
    payload = {
        "dataset": args.dataset,
        "peer": outs[0]["framework"],
        "peer_version": outs[0]["version"],
        "versions": outs[0]["versions"],
        "config": {
            "dataset": args.dataset,
            "task": args.task,
            "threads": args.threads,
            "patience": train.patience,
            "rows": info["rows"],
            "spec": {k: v for k, v in base.items() if k != "data"},
        },
        "runs": runs,
        "adrank_runs": [
            {
                "seed": r["seed"],
                "test_auc": r["test_auc"],
                "test_logloss": r["test_logloss"],
                "test_gauc": r["metrics"]["gauc"],
                "best_epoch": r["best_epoch"],
                "epochs": r["epochs"],
                "num_parameters": r.get("num_parameters"),
            }
            for r in adrank_rows
        ],
        "summary": summarize(runs, adrank_rows),
        "differences": outs[0]["differences"],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "peer_din.json", json.dumps(payload, indent=2) + "\n")
    text = markdown(payload)
    atomic_write_text(args.output / "peer_din.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
