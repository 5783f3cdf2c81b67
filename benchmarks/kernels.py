"""Micro-benchmarks behind three of adrank's speed choices.

    python -m benchmarks kernels [--threads N] [--repeats 5]

* **dropout**: forward + backward of dropout(p=0.2) on a 4096 x 400 activation (one hidden
  layer of the BARS MLPs at batch 4096): ``torch.nn.Dropout`` vs the int64-slice mask kernel
  that adrank used until issue 19 (kept in ``benchmarks.dropout_ab`` for its paired A/B;
  ``adrank.nn.Dropout`` is ``torch.nn.functional.dropout`` again).
* **attention**: forward + backward of the attention core of one AutoInt layer (4096 rows,
  10 fields, 4 heads of 32, input and output (B, F, 128)): ``F.scaled_dot_product_attention``
  vs the explicit ``softmax(Q K^T) V`` that ``adrank.nn.attention`` uses.
* **scoring batch**: forward-only scoring of 57,722 frappe-shaped rows (10 fields, the BARS
  DeepFM and AutoInt shapes, random ids) at 65,536 / 16,384 / 8,192 / 4,096 rows per batch;
  adrank scores in ``adrank.config.SCORE_BATCH_SIZE`` (8,192) rows by default.

Each number is the median over ``--repeats`` timed calls after a warm-up, in milliseconds.
Results: ``benchmarks/results/kernels.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import write_results

ROWS, FIELDS, HEADS, HEAD_DIM = 4096, 10, 4, 32
VALID_ROWS = 57_722  # frappe's validation split


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_dropout(repeats: int) -> dict[str, float]:
    import torch

    from benchmarks.dropout_ab import kernel_dropout

    x = torch.randn(ROWS, 400, requires_grad=True)
    grad = torch.randn(ROWS, 400)
    torch_layer = torch.nn.Dropout(0.2).train()
    arms = {
        "torch.nn.Dropout": lambda: torch_layer(x).backward(grad),
        "int64-slice kernel (reverted)": lambda: kernel_dropout(x, 0.2).backward(grad),
    }
    return {name: _median_ms(call, repeats) for name, call in arms.items()}


def bench_attention(repeats: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    width = HEADS * HEAD_DIM
    q, k, v = (torch.randn(ROWS, FIELDS, width, requires_grad=True) for _ in range(3))
    grad = torch.randn(ROWS, FIELDS, width)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(ROWS, FIELDS, HEADS, HEAD_DIM).transpose(1, 2)

    def merge(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(ROWS, FIELDS, width)

    def sdpa() -> None:
        merge(F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=1.0)).backward(
            grad
        )

    def explicit() -> None:
        weights = torch.softmax(heads(q) @ heads(k).transpose(-1, -2), dim=-1)
        merge(weights @ heads(v)).backward(grad)

    return {
        "scaled_dot_product_attention": _median_ms(sdpa, repeats),
        "explicit softmax(QK^T)V": _median_ms(explicit, repeats),
    }


def bench_scoring(repeats: int) -> dict[str, dict[str, float]]:
    import torch

    from adrank.data.feature_map import FeatureMap, FieldInfo
    from adrank.models.registry import build_model

    vocab = 540
    fmap = FeatureMap(
        fields=tuple(FieldInfo(f"f{i}", "categorical", vocab, 0, f"f{i}", None) for i in range(10)),
        labels=("label",),
    )
    gen = torch.Generator().manual_seed(0)
    features = {
        f"f{i}": torch.randint(0, vocab, (VALID_ROWS,), generator=gen) for i in range(FIELDS)
    }
    models = {
        "deepfm": build_model("deepfm", fmap, hidden_units=[400, 400, 400]),
        "autoint": build_model("autoint", fmap, attention_layers=6, num_heads=4, attention_dim=128),
    }
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        model.eval()
        out[name] = {}
        for batch in (65_536, 16_384, 8_192, 4_096):

            def score(model: torch.nn.Module = model, batch: int = batch) -> None:
                with torch.inference_mode():
                    for start in range(0, VALID_ROWS, batch):
                        model({k: t[start : start + batch] for k, t in features.items()})

            out[name][str(batch)] = _median_ms(score, repeats)
    return out


def markdown(results: dict[str, Any]) -> str:
    r = results
    lines = [
        f"Median of {r['repeats']} timed calls, {r['threads']} threads, milliseconds.\n",
        "| dropout(p=0.2) fwd+bwd, 4096 x 400 | ms |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in r["dropout"].items()),
        "",
        "| AutoInt attention core fwd+bwd (4096 x 10 fields x 4 heads x 32) | ms |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in r["attention"].items()),
        "",
        f"| scoring {VALID_ROWS:,} rows: model | 65,536 | 16,384 | 8,192 | 4,096 |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | " + " | ".join(f"{v:.0f}" for v in by_batch.values()) + " |"
            for m, by_batch in r["scoring"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, Any] = {"threads": args.threads, "repeats": args.repeats}
    results["dropout"] = bench_dropout(args.repeats)
    results["attention"] = bench_attention(args.repeats)
    results["scoring"] = bench_scoring(args.repeats)
    md = markdown(results)
    path = write_results("kernels", results, md)
    print(md)
    print(f"written: {path}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
