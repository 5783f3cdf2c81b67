"""Leaderboard tables (Markdown + CSV) and the AUC-vs-train-time plot."""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adrank.bench.reference import REFERENCE_LABEL, REFERENCES
from adrank.bench.runner import BenchmarkRun
from adrank.utils import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class LeaderboardRow:
    model: str
    seeds: int
    auc_mean: float
    auc_std: float
    logloss_mean: float
    logloss_std: float
    num_parameters: int
    epochs_mean: float
    train_time_s: float
    train_samples_per_s: float
    reference_auc: float | None
    reference_logloss: float | None

    @property
    def delta(self) -> float | None:
        return None if self.reference_auc is None else self.auc_mean - self.reference_auc


def aggregate(runs: list[BenchmarkRun], dataset: str) -> list[LeaderboardRow]:
    """One row per model (mean ± sample std over seeds), sorted by mean test AUC."""
    refs = REFERENCES.get(dataset, {})
    out: list[LeaderboardRow] = []
    for model in dict.fromkeys(r.model for r in runs):
        rs = [r for r in runs if r.model == model]
        auc = np.array([r.test_auc for r in rs])
        ll = np.array([r.test_logloss for r in rs])
        ddof = 1 if len(rs) > 1 else 0
        ref = refs.get(model)
        out.append(
            LeaderboardRow(
                model=model,
                seeds=len(rs),
                auc_mean=float(auc.mean()),
                auc_std=float(auc.std(ddof=ddof)),
                logloss_mean=float(ll.mean()),
                logloss_std=float(ll.std(ddof=ddof)),
                num_parameters=rs[0].num_parameters,
                epochs_mean=float(np.mean([r.epochs for r in rs])),
                train_time_s=float(np.mean([r.train_time_s for r in rs])),
                train_samples_per_s=float(np.mean([r.train_samples_per_s for r in rs])),
                reference_auc=ref[0] if ref else None,
                reference_logloss=ref[1] if ref else None,
            )
        )
    return sorted(out, key=lambda r: -r.auc_mean)


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def to_markdown(
    rows: list[LeaderboardRow],
    dataset: str,
    title: str | None = None,
    notes: dict[str, str] | None = None,
) -> str:
    """The leaderboard table, then a "Notes" list (model -> its config's ``notes``)."""
    fmt = lambda v, p=4: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    buf = io.StringIO()
    buf.write(f"# {title or f'Leaderboard: {dataset}'}\n\n")
    buf.write(f"Machine: {machine_line()}\n\n")
    buf.write(
        f"| model | seeds | test AUC (mean ± std) | test logloss | {REFERENCE_LABEL} AUC / "
        "logloss | Δ AUC | params | epochs | train time (s) | train samples/s |\n"
    )
    buf.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        ref = (
            f"{fmt(r.reference_auc)} / {fmt(r.reference_logloss)}"
            if r.reference_auc is not None
            else "–"
        )
        delta = "–" if r.delta is None else f"{r.delta:+.4f}"
        buf.write(
            f"| {r.model} | {r.seeds} | {r.auc_mean:.4f} ± {r.auc_std:.4f} | "
            f"{r.logloss_mean:.4f} ± {r.logloss_std:.4f} | {ref} | {delta} | "
            f"{r.num_parameters:,} | {r.epochs_mean:.1f} | {r.train_time_s:.0f} | "
            f"{r.train_samples_per_s:,.0f} |\n"
        )
    listed = [(r.model, notes[r.model]) for r in rows if notes and notes.get(r.model)]
    if listed:
        buf.write("\n## Notes\n\n")
        for model, text in listed:
            buf.write(f"- **{model}**: {text}\n")
    return buf.getvalue()


def config_notes(dataset: str, models: list[str]) -> dict[str, str]:
    """``notes`` of each model's shipped config for ``dataset`` (models without one skipped)."""
    from adrank.config import ConfigError, RunConfig, model_config_path

    out = {}
    for model in models:
        path = model_config_path(dataset, model)
        if path is None:
            continue
        try:
            notes = RunConfig.load(path).notes
        except ConfigError as exc:
            logger.warning("notes of %s not read: %s", path, exc)
            continue
        if notes:
            out[model] = notes
    return out


def to_csv(rows: list[LeaderboardRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "model",
            "seeds",
            "auc_mean",
            "auc_std",
            "logloss_mean",
            "logloss_std",
            "num_parameters",
            "epochs_mean",
            "train_time_s",
            "train_samples_per_s",
            "reference_auc",
            "reference_logloss",
            "delta_auc",
        ]
    )
    for r in rows:
        w.writerow(
            [
                r.model,
                r.seeds,
                f"{r.auc_mean:.6f}",
                f"{r.auc_std:.6f}",
                f"{r.logloss_mean:.6f}",
                f"{r.logloss_std:.6f}",
                r.num_parameters,
                f"{r.epochs_mean:.2f}",
                f"{r.train_time_s:.1f}",
                f"{r.train_samples_per_s:.0f}",
                "" if r.reference_auc is None else r.reference_auc,
                "" if r.reference_logloss is None else r.reference_logloss,
                "" if r.delta is None else f"{r.delta:.6f}",
            ]
        )
    return buf.getvalue()


def plot(rows: list[LeaderboardRow], path: Path, dataset: str) -> bool:
    """AUC (with std error bars) against mean train time; returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: skipping %s (pip install adrank[plot])", path)
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for r in rows:
        ax.errorbar(r.train_time_s, r.auc_mean, yerr=r.auc_std, fmt="o", capsize=3)
        ax.annotate(
            r.model,
            (r.train_time_s, r.auc_mean),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean train time per run (s, log scale)")
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(f"adrank on {dataset}: accuracy vs training time")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return True


def write_report(runs: list[BenchmarkRun], dataset: str, output_dir: Path) -> list[LeaderboardRow]:
    rows = aggregate(runs, dataset)
    output_dir.mkdir(parents=True, exist_ok=True)
    notes = config_notes(dataset, [r.model for r in rows])
    atomic_write_text(output_dir / "leaderboard.md", to_markdown(rows, dataset, notes=notes))
    atomic_write_text(output_dir / "leaderboard.csv", to_csv(rows))
    plot(rows, output_dir / "leaderboard.png", dataset)
    return rows
