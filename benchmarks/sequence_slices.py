"""Warm/cold slices of the ``movielens_100k`` sequence leaderboard (issue 14).

    python -m benchmarks.sequence_slices RUNS_ROOT [RUNS_ROOT ...] [--short 25]
        [--output benchmarks/results/sequences/slices]

Each ``RUNS_ROOT`` is a leaderboard output directory (``runs.jsonl`` and ``runs/``, e.g.
``benchmarks/results/sequences`` and ``benchmarks/results/movielens_100k_nohist`` for the
history-free baselines). Every finished single-task ``like`` run under it is scored again on
the test split with its saved weights (:func:`adrank.pipeline.predict_split`, the numbers of
``adrank evaluate``) and sliced three ways:

* **items**: warm (the movie's id is in the training vocabulary) or cold (it is not: it
  encodes as the unseen id). Cold movies are rare in this split (48 of 10,037 test rows),
  so their AUC is noisy: the row and positive counts are reported with it;
* **history**: the user's strictly-earlier ratings in the row's history, short (fewer than
  ``--short``, 25 by default; the test split's shortest is 9, since a user's test ratings
  come after their first ones) or long;
* **all** rows, as the leaderboard.

Per slice: AUC, logloss and gAUC by user, as mean ± std over the seeds of each model. The
history lengths come from ``movielens_100k``'s own test split; a run on another dataset with
the same rows (``movielens_100k_nohist``) is checked row by row (labels and users) before
its rows are sliced. Accuracy only; nothing is timed. Writes ``slices.json`` and ``slices.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adrank.data.schema import OOV_ID
from adrank.metrics import auc, gauc, logloss

HISTORY = "hist_item_id"
ITEM = "item_id"
TASK = "like"


def reference_slices(data_dir: str | None, short: int) -> dict[str, Any]:
    """Labels, users and the slice masks of ``movielens_100k``'s test split."""
    from adrank.artifact import load_split
    from adrank.data.prepare import prepare_dataset

    prepared = prepare_dataset("movielens_100k", data_dir=data_dir)
    test = load_split(prepared, "test")
    features = test.data.features
    lengths = (features[HISTORY] != 0).sum(dim=1).numpy()
    task = prepared.feature_map.labels.index(TASK)
    return {
        "labels": test.data.labels[:, task].numpy(),
        "users": test.data.roles["group"].numpy(),
        "masks": {
            "all": np.ones(len(lengths), dtype=bool),
            "warm items": features[ITEM].numpy() != OOV_ID,
            "cold items": features[ITEM].numpy() == OOV_ID,
            f"long history (>= {short})": lengths >= short,
            f"short history (< {short})": lengths < short,
        },
    }


def run_scores(run_dir: Path, reference: dict[str, Any], data_dir: str | None) -> np.ndarray:
    """The run's test probabilities of ``like``, aligned with the reference rows."""
    from adrank.pipeline import predict_split

    art, _, preds = predict_split(run_dir, "test", data_dir=data_dir)
    probs = preds.probs.reshape(len(preds.probs), -1)
    outputs = preds.outputs or list(art.feature_map.labels)
    column = outputs.index("pctr") if "pctr" in outputs else 0
    labels = preds.labels[:, art.feature_map.labels.index(TASK)]
    if not (
        np.array_equal(labels, reference["labels"])
        and preds.groups is not None
        and np.array_equal(preds.groups, reference["users"])
    ):
        raise ValueError(f"{run_dir}: its test rows are not movielens_100k's test rows")
    return probs[:, column]


def slice_metrics(scores: np.ndarray, reference: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for name, mask in reference["masks"].items():
        y, p, g = reference["labels"][mask], scores[mask], reference["users"][mask]
        both = 0 < y.sum() < len(y)
        out[name] = {
            "rows": int(mask.sum()),
            "positives": int(y.sum()),
            "auc": auc(y, p) if both else float("nan"),
            "logloss": logloss(y, p) if len(y) else float("nan"),
            "gauc": gauc(y, p, g) if both else float("nan"),
        }
    return out


def finished_runs(root: Path) -> list[tuple[str, int, Path]]:
    """(model, seed, run directory) of the single-task ``like`` runs recorded under ``root``."""
    out = []
    for line in (root / "runs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("task") != TASK:
            continue
        run_dir = root / "runs" / Path(row["run_dir"]).name
        if (run_dir / "model.pt").exists():
            out.append((f"{row['model']} [{root.name}]", int(row["seed"]), run_dir))
    return out


def _mean_std(values: Sequence[float]) -> str:
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def markdown(results: dict[str, dict[int, dict[str, dict[str, float]]]], short: int) -> str:
    slices = list(next(iter(next(iter(results.values())).values())))
    lines = [
        "# movielens_100k sequence leaderboard: warm/cold slices (task `like`)",
        "",
        "Test split, each run's saved weights scored again; mean ± std over its seeds. "
        "Cold items: the movie is not in the training vocabulary. History: the user's "
        f"strictly-earlier ratings in the row (short: fewer than {short}). "
        "Produced by `python -m benchmarks.sequence_slices`.",
        "",
    ]
    first = next(iter(results.values()))
    seed0 = next(iter(first.values()))
    counts = ", ".join(f"{s}: {seed0[s]['rows']:,} rows ({seed0[s]['positives']:,} positive)"
                       for s in slices)  # fmt: skip
    lines += [f"Rows per slice: {counts}.", ""]
    for metric in ("auc", "gauc", "logloss"):
        lines += [f"## {metric}", "", "| model | seeds | " + " | ".join(slices) + " |"]
        lines.append("|---|---|" + "---|" * len(slices))
        for model, by_seed in results.items():
            cells = [_mean_std([r[s][metric] for r in by_seed.values()]) for s in slices]
            lines.append(f"| {model} | {len(by_seed)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--short", type=int, default=25)
    parser.add_argument("--data-dir", default=os.environ.get("ADRANK_DATA_DIR"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sequences/slices"))
    args = parser.parse_args(argv)
    reference = reference_slices(args.data_dir, args.short)
    results: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for root in args.roots:
        for model, seed, run_dir in finished_runs(root):
            scores = run_scores(run_dir, reference, args.data_dir)
            results.setdefault(model, {})[seed] = slice_metrics(scores, reference)
            print(f"{model} seed {seed}: {results[model][seed]['all']}", flush=True)
    if not results:
        raise SystemExit("no finished like runs under " + ", ".join(map(str, args.roots)))
    from adrank.utils import atomic_write_text  # temp file renamed into place

    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output.with_suffix(".json"), json.dumps(results, indent=2, default=str))
    atomic_write_text(args.output.with_suffix(".md"), markdown(results, args.short))
    print(f"wrote {args.output}.md")


if __name__ == "__main__":
    main()
