"""Multi-domain leaderboards: multi-domain models against pooled and per-domain baselines,
with per-domain test AUC / logloss / gAUC, 3 seeds.

``python -m benchmarks.multidomain [--datasets frappe_domains,movielens_100k_domains,
movielens_100k_domains_thin,movielens_100k_cross] [--seeds 2021,2022,2023] [--report-only]``

For each dataset (BARS protocol: each model's config in ``configs/models/<dataset>/``,
early stopping on validation AUC, ``train.num_threads=1``):

* **multi-domain models** ``star``, ``pepnet``, ``adaptdhm``, trained on all domains;
* **pooled baselines** ``dnn``, ``deepfm``: the same rows, the domain one more feature;
* **per-domain baselines** ``dnn``, ``deepfm`` with ``train.domain_filter=<domain>``: one
  run per domain, trained, early-stopped and tested on that domain's rows only.

The cross-domain setting ``movielens_100k_cross`` (:data:`PLANS`) runs ``daca`` against
``din`` on the same source-domain histories, ``dnn`` and ``deepfm`` pooled, and ``dnn`` and
``deepfm`` trained on the (thinned) target domain alone.

Runs go through ``adrank.bench.runner.run_benchmark`` into
``benchmarks/results/multidomain/<dataset>/pooled/`` and ``.../only_<domain>/``
(``runs.jsonl`` + run directories): a re-run skips every recorded (model, seed), so an
interrupted benchmark resumes where it stopped. ``summary.md`` / ``summary.json`` in
``benchmarks/results/multidomain/<dataset>/`` put the three kinds side by side (a row per
model, a column per domain; ``summary.png`` the per-domain AUCs as grouped bars) and say,
per domain, whether the best multi-domain model beats the best baseline, and the best
pooled one, by more than the larger of the two seed stds. Every run records the load
average at its start and end (``metrics.json`` ``machine_load``); times are not reported
here (accuracy only).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from adrank.bench.domains import DOMAIN_METRICS, cell, domain_names, mean_std
from adrank.bench.runner import BenchmarkRun, read_results, run_benchmark
from adrank.data.datasets import get_dataset

RESULTS = Path(__file__).parent / "results" / "multidomain"
DATASETS = (
    "frappe_domains", "movielens_100k_domains", "movielens_100k_domains_thin",
    "movielens_100k_cross",
)  # fmt: skip
MULTI_DOMAIN = ("star", "pepnet", "adaptdhm", "daca")
BASELINES = ("dnn", "deepfm", "din")


class Plan(NamedTuple):
    """What one dataset runs: multi-domain models and baselines on all domains pooled,
    and the baselines trained per domain on ``alone`` (``None``: every domain)."""

    multi_domain: tuple[str, ...]
    baselines: tuple[str, ...]
    alone: tuple[str, ...] | None = None


#: the cross-domain setting: DACA against pooled models (DIN on the same source-domain
#: histories) and target-only baselines
PLANS: dict[str, Plan] = {"movielens_100k_cross": Plan(("daca",), ("din", "dnn", "deepfm"),
                                                      ("target",))}  # fmt: skip
DEFAULT_PLAN = Plan(("star", "pepnet", "adaptdhm"), ("dnn", "deepfm"))
SEEDS = (2021, 2022, 2023)
OVERRIDES = ["train.num_threads=1", "train.progress=false"]

logger = logging.getLogger("benchmarks.multidomain")


def domains_of(dataset: str, root: Path) -> list[str]:
    """The dataset's domains as the pooled runs recorded them (their ``auc@DOMAIN`` keys)."""
    runs = read_results(root / "pooled" / "runs.jsonl").values()
    return domain_names([k for r in runs for k in r.metrics])


def run(dataset: str, seeds: Sequence[int], root: Path, extra: Sequence[str] = ()) -> None:
    """Train every missing (model, seed) of ``dataset``; recorded ones are skipped.
    ``extra``: more ``--set`` overrides (a smoke run's ``train.max_epochs=1``)."""
    overrides = [*OVERRIDES, *extra]
    plan = PLANS.get(dataset, DEFAULT_PLAN)
    run_benchmark(dataset, [*plan.multi_domain, *plan.baselines], list(seeds), root / "pooled",
                  overrides=overrides, keep_going=True)  # fmt: skip
    alone = [b for b in plan.baselines if b in ("dnn", "deepfm")]
    for domain in plan.alone or domains_of(dataset, root):
        run_benchmark(dataset, alone, list(seeds), root / f"only_{domain}",
                      overrides=[*overrides, f"train.domain_filter={domain}"],
                      keep_going=True)  # fmt: skip


def _values(runs: Sequence[BenchmarkRun], key: str) -> list[float]:
    return [r.metrics[key] for r in runs if key in r.metrics]


def summarize(dataset: str, root: Path) -> dict[str, Any]:
    """Rows ``model`` (pooled / multi-domain) and ``model (per domain)``: per metric, the
    overall and per-domain (mean, std) over seeds; plus the per-domain verdicts."""
    pooled = list(read_results(root / "pooled" / "runs.jsonl").values())
    domains = domains_of(dataset, root)
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    seed_counts: dict[str, list[int]] = {}  # per row: how many seeds each of its cells averages
    for model in [*MULTI_DOMAIN, *BASELINES]:
        runs = [r for r in pooled if r.model == model]
        if runs:
            seed_counts[model] = [len(runs)]
            rows[model] = {
                k: mean_std(_values(runs, k))
                for metric, _ in DOMAIN_METRICS
                for k in (metric, *(f"{metric}@{d}" for d in domains))
            }
    for model in BASELINES:
        cells: dict[str, tuple[float, float]] = {}
        counts = []
        for d in domains:
            only = read_results(root / f"only_{d}" / "runs.jsonl").values()
            runs = [r for r in only if r.model == model]
            counts.append(len(runs))
            for metric, _ in DOMAIN_METRICS:
                if runs:
                    cells[f"{metric}@{d}"] = mean_std(_values(runs, f"{metric}@{d}"))
        if cells:
            rows[f"{model} (per domain)"] = cells
            seed_counts[f"{model} (per domain)"] = counts
    verdicts = {}
    for d in domains:
        key = f"auc@{d}"

        def best(names: Sequence[str], key: str = key) -> tuple[str, tuple[float, float]] | None:
            have = [(n, rows[n][key]) for n in names if n in rows and key in rows[n]]
            return max(have, key=lambda x: x[1][0]) if have else None

        md = best(MULTI_DOMAIN)
        if md is None:
            continue
        seeds = min(len(_values([r for r in pooled if r.model == md[0]], key)), 3)
        for name, base in (
            ("", best([n for n in rows if n not in MULTI_DOMAIN])),
            ("pooled_", best([n for n in BASELINES if n in rows])),
        ):
            if base is None:
                continue
            gap = md[1][0] - base[1][0]
            noise = max(md[1][1], base[1][1])
            beats = None if seeds < 2 else bool(gap > noise)  # one seed has no std
            verdicts.setdefault(d, {"multi_domain": md[0]}).update({
                f"{name}baseline": base[0], f"{name}auc_gap": gap, f"{name}larger_std": noise,
                f"{name}beats_by_more_than_std": beats,
            })  # fmt: skip
    return {"dataset": dataset, "domains": domains, "rows": rows, "seeds": seed_counts,
            "verdicts": verdicts}  # fmt: skip


def to_markdown(summary: dict[str, Any]) -> str:
    domains, rows = summary["domains"], summary["rows"]
    out = [f"# Multi-domain leaderboard: {summary['dataset']}\n",
           f"Dataset: {get_dataset(summary['dataset']).description}.\n",
           "Test metrics, mean ± std over seeds. `model (per domain)`: one run per domain, "
           "trained and tested on that domain alone (no overall figure). Produced by "
           "`python -m benchmarks.multidomain`; one thread per run.\n"]  # fmt: skip
    counts = summary.get("seeds", {})

    def seeds(name: str) -> str:  # "3", or "0–3" while a per-domain row is partial
        n = counts.get(name, [])
        return "?" if not n else str(n[0]) if min(n) == max(n) else f"{min(n)}–{max(n)}"

    for metric, title in DOMAIN_METRICS:
        cols = ["model", "seeds", f"all {title}", *(f"{d} {title}" for d in domains)]
        out.append("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for name, m in rows.items():
            cells = [cell(m.get(metric)), *(cell(m.get(f"{metric}@{d}")) for d in domains)]
            out.append("| " + " | ".join([name, seeds(name), *cells]) + " |")
        out.append("")
    out.append("## Does a multi-domain model beat the baselines?\n")
    out.append("Per domain, the best multi-domain model's AUC against the best baseline of "
               "any kind, then against the best pooled one; \"yes\" when the gap is larger "
               "than the larger of the two seed stds.\n")  # fmt: skip

    def word(beats: bool | None) -> str:
        return "n/a (one seed)" if beats is None else "yes" if beats else "no"

    for d, v in summary["verdicts"].items():
        line = f"- **{d}**: best multi-domain {v['multi_domain']}"
        if "baseline" in v:
            beats = word(v["beats_by_more_than_std"])
            line += (f" vs best baseline {v['baseline']}: AUC {v['auc_gap']:+.4f} (larger "
                     f"seed std {v['larger_std']:.4f}): {beats}")  # fmt: skip
        if "pooled_baseline" in v and v["pooled_baseline"] != v.get("baseline"):
            line += (f"; vs pooled {v['pooled_baseline']}: AUC {v['pooled_auc_gap']:+.4f} "
                     f"(larger seed std {v['pooled_larger_std']:.4f}): "
                     f"{word(v['pooled_beats_by_more_than_std'])}")  # fmt: skip
        out.append(line + ".")
    return "\n".join(out) + "\n"


def plot_domains(summary: dict[str, Any], path: Path) -> Path:
    """Grouped bars: per domain, each row's test AUC (mean, seed std as error bar); the
    multi-domain models hatched. The y axis starts near the lowest bar so gaps show."""
    from adrank.plots import pyplot, save_png

    plt = pyplot()
    domains, rows = summary["domains"], summary["rows"]
    names = [n for n in rows if any(f"auc@{d}" in rows[n] for d in domains)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(domains) * max(len(names), 1) / 3, 4))
    width = 0.8 / max(len(names), 1)
    lows = []
    for i, name in enumerate(names):
        cells = [rows[name].get(f"auc@{d}", (float("nan"), 0.0)) for d in domains]
        means = [c[0] for c in cells]
        lows += [m for m in means if m == m]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(domains))]
        ax.bar(xs, means, width, yerr=[c[1] for c in cells], capsize=2, label=name,
               hatch="//" if name in MULTI_DOMAIN else None)  # fmt: skip
    if lows:
        ax.set_ylim(min(lows) - 0.01, max(lows) + 0.01)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel("test AUC (mean ± seed std)")
    ax.set_title(f"Per-domain test AUC: {summary['dataset']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_png(fig, path)


def write_summary(dataset: str, root: Path) -> Path:
    from adrank.utils import atomic_write_text

    summary = summarize(dataset, root)
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "summary.md", to_markdown(summary))
    if summary["rows"] and summary["domains"]:
        plot_domains(summary, root / "summary.png")
    return root / "summary.md"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="Only rewrite summaries.")
    parser.add_argument("--set", action="append", default=[], help="Extra override (smoke).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for dataset in args.datasets.split(","):
        root = args.results / dataset
        if not args.report_only:
            run(dataset, [int(s) for s in args.seeds.split(",")], root, args.set)
        logger.info("wrote %s", write_summary(dataset, root))


if __name__ == "__main__":
    main()
