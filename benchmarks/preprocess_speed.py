"""Preprocessing throughput: adrank's FeatureProcessor vs a straightforward pandas version.

    python -m benchmarks preprocess [--rows 10000000] [--repeats 3] [--scratch DIR]
        [--datasets frappe,synth]

Both sides do the same transforms on in-memory frames (reading files is not timed):

* fit: per categorical field a vocabulary of values seen >= ``min_count`` times, ids by
  descending count (ties by value) from 2; numeric fields need no statistics for log1p;
* transform: categorical -> id (unseen/missing -> OOV = 1), numeric -> fill missing with 0,
  then sign(x) * log1p(|x|) as float32; label -> float32.

Data: the ``frappe`` raw splits (fit on train, transform train+valid+test), and a synthetic
Criteo-schema file (``adrank.data.synth``, 13 numeric + 26 hex-string categorical fields,
vocabulary for every field) generated once and cached under ``<scratch>/synth``
(fit + transform of the same rows). Outputs are checked equal on a sample before timing.
rows/s = rows transformed / (fit + transform seconds); median of ``--repeats`` runs.
Results: ``benchmarks/results/preprocess_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_time, peak_rss_mb, write_results
from benchmarks.train_speed import DEFAULT_SCRATCH, default_data_dir

OOV, FIRST_ID = 1, 2


# ---------------------------------------------------------------- pandas reference ----
def pandas_fit(frame: Any, categorical: dict[str, int]) -> dict[str, Any]:
    """Vocabulary per categorical column: value -> id (count desc, value asc, from 2)."""
    import pandas as pd

    vocab = {}
    for col, min_count in categorical.items():
        s = frame[col]
        if s.dtype != "str" and str(s.dtype) not in ("string", "str"):
            s = s.astype("string")
        s = s[s.notna() & (s != "")]
        counts = s.value_counts()
        counts = counts[counts >= min_count]
        table = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        vocab[col] = pd.Series(
            np.arange(FIRST_ID, FIRST_ID + len(table), dtype=np.int64), index=table["value"]
        )
    return vocab


def pandas_transform(
    frame: Any, vocab: dict[str, Any], numeric: list[str], label: str
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {label: frame[label].to_numpy(dtype=np.float32)}
    for col, table in vocab.items():
        s = frame[col]
        if s.dtype != "str" and str(s.dtype) not in ("string", "str"):
            s = s.astype("string")
        out[col] = s.map(table).fillna(OOV).to_numpy(dtype=np.int64)
    for col in numeric:
        x = frame[col].astype("float64").fillna(0.0).to_numpy(dtype=np.float64)
        out[col] = (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)
    return out


# ------------------------------------------------------------------------- datasets ----
def frappe_frames(data_dir: str | None) -> tuple[Any, dict[str, Any]]:
    from adrank.data.datasets import get_dataset, resolve_data_dir

    builder = get_dataset("frappe")
    return builder.schema(), builder.build_splits(resolve_data_dir(data_dir))


def synth_frames(rows: int, scratch: Path, seed: int) -> tuple[Any, dict[str, Any]]:
    import polars as pl

    from adrank.data.synth import criteo_synth_schema, synth_criteo

    path = scratch / "synth" / f"criteo_synth_{rows}_s{seed}.parquet"
    if not path.exists():
        t0 = time.perf_counter()
        synth_criteo(path, rows, seed=seed)
        print(f"generated {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return criteo_synth_schema(None), {"train": pl.read_parquet(path)}


def bench_dataset(name: str, schema: Any, splits: dict[str, Any], repeats: int) -> dict[str, Any]:
    from adrank.data.processor import FeatureProcessor
    from adrank.data.schema import CategoricalFeature, NumericFeature

    for f in schema.features:
        if isinstance(f, NumericFeature) and (f.buckets or f.normalizer not in ("log1p", "none")):
            raise ValueError(f"{name}: the pandas reference only does log1p numerics ({f.name})")
        if isinstance(f, CategoricalFeature) and (f.hash_buckets or f.share_vocab_with):
            raise ValueError(f"{name}: the pandas reference has no hashing/sharing ({f.name})")
    categorical = {
        f.source or f.name: f.min_count
        for f in schema.features
        if isinstance(f, CategoricalFeature)
    }
    numeric = [f.source or f.name for f in schema.features if isinstance(f, NumericFeature)]
    label = schema.labels[0]
    rows = sum(f.height for f in splits.values())

    def run_adrank() -> dict[str, Any]:
        proc = FeatureProcessor(schema).fit(splits["train"])
        return {k: proc.transform(v) for k, v in splits.items()}

    adrank_out = run_adrank()
    adrank_s, adrank_runs = median_time(run_adrank, repeats, warmup=0)
    sample = {k: v.head(100_000) for k, v in adrank_out.items()}
    del adrank_out
    gc.collect()

    pd_splits = {k: v.to_pandas() for k, v in splits.items()}

    def run_pandas() -> dict[str, Any]:
        vocab = pandas_fit(pd_splits["train"], categorical)
        return {k: pandas_transform(v, vocab, numeric, label) for k, v in pd_splits.items()}

    pandas_out = run_pandas()
    for split, enc in sample.items():
        for col in [label, *categorical, *numeric]:
            ours = enc[col].to_numpy()
            ref = pandas_out[split][col][: len(ours)]
            if not np.allclose(ours, ref, rtol=1e-6, atol=1e-6):
                bad = int(np.flatnonzero(~np.isclose(ours, ref))[0])
                raise AssertionError(
                    f"{name}/{split}/{col}: adrank {ours[bad]} != pandas {ref[bad]} at row {bad}"
                )
    del pandas_out
    gc.collect()
    pandas_s, pandas_runs = median_time(run_pandas, repeats, warmup=0)
    pd_splits.clear()
    gc.collect()
    return {
        "rows": rows,
        "adrank_s": adrank_s,
        "adrank_runs": adrank_runs,
        "pandas_s": pandas_s,
        "pandas_runs": pandas_runs,
        "adrank_rows_per_s": rows / adrank_s,
        "pandas_rows_per_s": rows / pandas_s,
        "speedup": pandas_s / adrank_s,
        "outputs_equal_on_sample": True,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="synthetic rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--datasets", default="frappe,synth")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"repeats": args.repeats, "datasets": {}}
    for name in args.datasets.split(","):
        if name == "frappe":
            schema, splits = frappe_frames(args.data_dir)
            label = "frappe (fit train, transform train+valid+test)"
        elif name == "synth":
            schema, splits = synth_frames(args.rows, args.scratch, args.seed)
            label = f"synthetic Criteo schema, {args.rows:,} rows (fit + transform)"
        else:
            raise SystemExit(f"unknown dataset {name!r}; expected frappe or synth")
        print(f"preprocess: {label} ...", flush=True)
        r = bench_dataset(name, schema, splits, args.repeats)
        r["label"] = label
        results["datasets"][name] = r
        del splits
        gc.collect()
        print(
            f"  adrank {r['adrank_rows_per_s']:,.0f} rows/s, pandas "
            f"{r['pandas_rows_per_s']:,.0f} rows/s, {r['speedup']:.2f}x",
            flush=True,
        )
    results["peak_rss_mb"] = peak_rss_mb()
    lines = [
        "| data | rows | adrank s | pandas s | adrank rows/s | pandas rows/s | adrank ÷ pandas |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["datasets"].values():
        lines.append(
            f"| {r['label']} | {r['rows']:,} | {r['adrank_s']:.2f} | {r['pandas_s']:.2f} | "
            f"{r['adrank_rows_per_s']:,.0f} | {r['pandas_rows_per_s']:,.0f} | "
            f"{r['speedup']:.2f}× |"
        )
    lines.append(
        f"\nFit + transform on in-memory frames (file reading not timed), median of "
        f"{args.repeats} runs; outputs checked equal on a 100k-row sample. Synthetic data "
        f"is for speed only (never accuracy). Peak RSS {results['peak_rss_mb']:,.0f} MiB.\n"
    )
    md = "\n".join(lines)
    small = "synth" in args.datasets and args.rows < 10_000_000
    path = write_results("preprocess_speed_small" if small else "preprocess_speed", results, md)
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
