"""Out-of-core training: DeepFM on N synthetic Criteo-schema rows streamed from Parquet.

    python -m benchmarks ooc [--rows 50000000] [--hash-buckets 500000] [--fit-rows 2000000]
        [--threads N] [--scratch benchmarks/.scratch] [--max-steps S]

Stages, each in a fresh subprocess so each reports its own peak RSS, and each skipped when
its output already exists (re-running resumes after the last finished stage):

1. **generate**: ``adrank.data.synth.synth_criteo`` writes ``raw.parquet`` in 1M-row chunks.
   Synthetic data: for speed and scale only, never accuracy.
2. **prepare**: ``FeatureProcessor.fit`` takes a DataFrame, so it is fitted on a bounded
   sample (the first ``--fit-rows`` rows). Fields whose cardinality exceeds
   ``--hash-buckets`` are hashed into that many buckets (bounded embedding tables, no
   vocabulary to fit); the others get a vocabulary from the sample (values unseen there
   map to OOV). The file is then transformed chunk by chunk (``--chunk-rows``) and written
   with 65,536-row row groups.
3. **train**: one epoch of DeepFM (BARS shape: emb 10, 400-400-400, BN, dropout 0.2,
   batch 4096, Adam 1e-3; no regularizer) through ``ParquetStreamLoader`` (row groups read
   on a prefetch thread, shuffled by row group and within groups) and the ``Trainer``,
   with ``sparse_embeddings`` (lazy Adam: a step updates only the embedding rows its batch
   used; ``--dense-embeddings`` for plain Adam over all ~26M table entries per step).

Reports rows/s and peak RSS per stage (the bound for the train stage is 4 GiB).
Results: ``benchmarks/results/out_of_core.{json,md}`` (``out_of_core_small`` below 50M rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from adrank.utils import atomic_write_text
from benchmarks.common import peak_rss_mb, write_results
from benchmarks.train_speed import DEFAULT_SCRATCH, ROOT

RSS_BOUND_MB = 4096.0


STAGES = ("generate", "prepare", "train")


def stage_generate(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from adrank.data.synth import synth_criteo

    t0 = time.perf_counter()
    synth_criteo(work / "raw.parquet", args.rows, seed=args.seed, chunk_rows=1_000_000)
    seconds = time.perf_counter() - t0
    return {"rows": args.rows, "seconds": seconds, "rows_per_s": args.rows / seconds}


def stage_prepare(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adrank.data.prepare import ROW_GROUP_SIZE
    from adrank.data.processor import FeatureProcessor
    from adrank.data.synth import criteo_synth_schema

    raw = pq.ParquetFile(work / "raw.parquet")
    t0 = time.perf_counter()
    batches, got = [], 0
    for rb in raw.iter_batches(batch_size=min(args.fit_rows, 1_000_000)):
        batches.append(rb)
        got += rb.num_rows
        if got >= args.fit_rows:
            break
    sample = pl.from_arrow(pa.Table.from_batches(batches)).head(args.fit_rows)
    del batches
    schema = criteo_synth_schema(args.hash_buckets)
    processor = FeatureProcessor(schema).fit(sample)
    fit_rows = sample.height
    del sample
    fit_s = time.perf_counter() - t0
    processor.save(work / "processor")
    feature_map = processor.feature_map()
    feature_map.save(work / "feature_map.json")
    t1 = time.perf_counter()
    tmp = work / ".processed.parquet.tmp"
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for rb in raw.iter_batches(batch_size=args.chunk_rows):
            encoded = processor.transform(pl.from_arrow(pa.Table.from_batches([rb]))).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, encoded.schema)
            writer.write_table(encoded, row_group_size=ROW_GROUP_SIZE)
            rows += encoded.num_rows
            del encoded
        if writer is not None:
            writer.close()
        os.replace(tmp, work / "processed.parquet")
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    transform_s = time.perf_counter() - t1
    tables = {f.name: f.vocab_size for f in feature_map.fields if f.kind == "categorical"}
    return {
        "fit_rows": fit_rows,
        "fit_s": fit_s,
        "rows": rows,
        "transform_s": transform_s,
        "transform_rows_per_s": rows / transform_s,
        "embedding_rows": sum(tables.values()),
        "hashed_fields": [f.name for f in schema.features if getattr(f, "hash_buckets", None)],
    }


def stage_train(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from adrank.config import TrainConfig
    from adrank.data.batches import ParquetStreamLoader
    from adrank.data.feature_map import FeatureMap
    from adrank.models.registry import build_model
    from adrank.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    fm = FeatureMap.load(work / "feature_map.json")
    loader = ParquetStreamLoader(
        work / "processed.parquet", fm, 4096, shuffle=True, seed=args.seed, prefetch=4
    )
    model = build_model("deepfm", fm, embedding_dim=10, hidden_units=[400, 400, 400])
    cfg = TrainConfig(
        batch_size=4096,
        max_epochs=1,
        seed=args.seed,
        num_threads=args.threads,
        progress=False,
        sparse_embeddings=not args.dense_embeddings,
    )
    train: Any = loader
    if args.max_steps:
        train = _Limited(loader, args.max_steps)
    t0 = time.perf_counter()
    result = Trainer(model, cfg).fit(train)
    seconds = time.perf_counter() - t0
    h = result.history[0]
    return {
        "rows": h["train_samples"],
        "seconds": seconds,
        "train_time_s": h["train_time_s"],
        "rows_per_s": h["train_samples_per_s"],
        "train_loss": h["train_loss"],
        "parameters": model.num_parameters(),
        "threads": torch.get_num_threads(),
        "sparse_embeddings": cfg.sparse_embeddings,
    }


class _Limited:
    """The first ``steps`` batches of a loader (for short validation runs)."""

    def __init__(self, loader: Any, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return min(self.steps, len(self.loader))

    def __iter__(self) -> Any:
        for i, batch in enumerate(self.loader):
            if i >= self.steps:
                return
            yield batch


def _done(work: Path, stage: str) -> Path:
    return work / f"{stage}.result.json"


def run_stage(stage: str, work: Path, argv: list[str]) -> dict[str, Any]:
    marker = _done(work, stage)
    if marker.exists():
        print(f"{stage}: reused {marker}", flush=True)
        return json.loads(marker.read_text())
    print(f"{stage}: running ...", flush=True)
    cmd = [sys.executable, "-m", "benchmarks.out_of_core", "--stage", stage, *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    atomic_write_text(marker, json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hash-buckets", type=int, default=500_000)
    parser.add_argument("--fit-rows", type=int, default=2_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop training early")
    parser.add_argument(
        "--dense-embeddings",
        action="store_true",
        help="dense Adam over the whole embedding table (default: sparse_embeddings, which "
        "updates only the rows a batch uses)",
    )
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    args = parser.parse_args(argv)
    work = args.scratch / "ooc" / f"rows{args.rows}_s{args.seed}_h{args.hash_buckets}"
    work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        fn = {"generate": stage_generate, "prepare": stage_prepare, "train": stage_train}
        result = fn[args.stage](work, args)
        result["peak_rss_mb"] = peak_rss_mb()
        print("RESULT " + json.dumps(result), flush=True)
        return
    child = [a for a in argv if a != "ooc"]
    results: dict[str, Any] = {"rows": args.rows, "hash_buckets": args.hash_buckets}
    for stage in STAGES:
        if stage == "train" and args.max_steps:
            _done(work, "train").unlink(missing_ok=True)  # partial epochs are never reused
        results[stage] = run_stage(stage, work, child)
        r = results[stage]
        print(f"  {stage}: peak RSS {r['peak_rss_mb']:,.0f} MiB", flush=True)
    g, p, t = results["generate"], results["prepare"], results["train"]
    results["train_rss_within_bound"] = t["peak_rss_mb"] <= RSS_BOUND_MB
    scale = "" if args.rows >= 50_000_000 else " (small-scale validation run)"
    md = (
        f"Out-of-core DeepFM on {args.rows:,} synthetic Criteo-schema rows{scale}; "
        f"{t['threads']} threads; "
        f"{'sparse (lazy Adam)' if t.get('sparse_embeddings') else 'dense Adam'} embedding "
        f"updates; fields over {args.hash_buckets:,} values hashed "
        f"({', '.join(p['hashed_fields'])}); {p['embedding_rows']:,} embedding rows.\n\n"
        "| stage | rows | seconds | rows/s | peak RSS MiB |\n|---|---|---|---|---|\n"
        f"| generate (synth_criteo) | {g['rows']:,} | {g['seconds']:.1f} | "
        f"{g['rows_per_s']:,.0f} | {g['peak_rss_mb']:,.0f} |\n"
        f"| fit processor on sample | {p['fit_rows']:,} | {p['fit_s']:.1f} | "
        f"{p['fit_rows'] / p['fit_s']:,.0f} | {p['peak_rss_mb']:,.0f} |\n"
        f"| transform to Parquet (chunked) | {p['rows']:,} | {p['transform_s']:.1f} | "
        f"{p['transform_rows_per_s']:,.0f} | (same process) |\n"
        f"| train 1 epoch (ParquetStreamLoader + Trainer) | {t['rows']:,} | "
        f"{t['train_time_s']:.1f} | {t['rows_per_s']:,.0f} | {t['peak_rss_mb']:,.0f} |\n"
        f"\nTrain-stage peak RSS {'within' if results['train_rss_within_bound'] else 'OVER'} "
        f"the {RSS_BOUND_MB:,.0f} MiB bound. Synthetic data: speed and scale only.\n"
    )
    notes = [f"- {stage}: {results[stage]['note']}" for stage in STAGES if "note" in results[stage]]
    if notes:
        md += "\nNotes:\n" + "\n".join(notes) + "\n"
    name = "out_of_core" if args.rows >= 50_000_000 and not args.max_steps else "out_of_core_small"
    path = write_results(name, results, md)
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
