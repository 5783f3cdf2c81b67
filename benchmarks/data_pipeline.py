"""Preprocessing and batch-assembly throughput on the real frappe set.

    python -m benchmarks data [--repeats 3]

* preprocessing: raw frappe build + FeatureProcessor fit + transform of all splits
  (rows/s over the 288,609 rows), without the cache;
* batch assembly: rows/s of the in-memory loader producing shuffled 4096-row frappe
  batches (10 int64 fields + labels), one full epoch per measurement.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import median_time, peak_rss_mb, write_results


def run(repeats: int = 3) -> dict:
    import torch

    from adrank.data.batches import InMemoryLoader, TensorData
    from adrank.data.datasets import get_dataset, resolve_data_dir
    from adrank.data.prepare import prepare_dataset, prepare_frames

    data_dir = resolve_data_dir(None)
    builder = get_dataset("frappe")
    splits = builder.build_splits(data_dir)
    rows = sum(f.height for f in splits.values())

    build_s, _ = median_time(lambda: builder.build_splits(data_dir), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1000))
        fit_s, _ = median_time(
            lambda: prepare_frames(builder.schema(), splits, f"{tmp}/p{next(counter)}"), repeats
        )
        prepared = prepare_dataset("frappe", data_dir=data_dir, cache_dir=tmp)
        train = TensorData.from_parquet(prepared.splits["train"], prepared.feature_map)

    def epoch() -> int:
        n = 0
        loader = InMemoryLoader(train, 4096, shuffle=True, seed=1)
        for batch in loader:
            n += len(batch)
        return n

    assemble_s, _ = median_time(epoch, repeats)
    return {
        "rows": rows,
        "raw_build_s": build_s,
        "fit_transform_write_s": fit_s,
        "preprocess_rows_per_s": rows / (build_s + fit_s),
        "fit_transform_rows_per_s": rows / fit_s,
        "batch_rows": len(train),
        "batch_assembly_s": assemble_s,
        "batch_assembly_rows_per_s": len(train) / assemble_s,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "data_dir": os.fspath(data_dir),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    r = run(args.repeats)
    md = (
        "| stage | rows | median seconds | rows/s |\n|---|---|---|---|\n"
        f"| frappe raw build (negative sampling + split) | {r['rows']:,} | "
        f"{r['raw_build_s']:.3f} | {r['rows'] / r['raw_build_s']:,.0f} |\n"
        f"| fit + transform + write Parquet | {r['rows']:,} | {r['fit_transform_write_s']:.3f} | "
        f"{r['fit_transform_rows_per_s']:,.0f} |\n"
        f"| preprocessing total | {r['rows']:,} | "
        f"{r['raw_build_s'] + r['fit_transform_write_s']:.3f} | "
        f"{r['preprocess_rows_per_s']:,.0f} |\n"
        f"| batch assembly (shuffled, 4096/batch, one epoch) | {r['batch_rows']:,} | "
        f"{r['batch_assembly_s']:.4f} | {r['batch_assembly_rows_per_s']:,.0f} |\n"
        f"\nPeak RSS {r['peak_rss_mb']:.0f} MiB; median of {args.repeats} runs; "
        f"{time.perf_counter() - t0:.0f}s in all.\n"
    )
    path = write_results("data_pipeline", r, md)
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
