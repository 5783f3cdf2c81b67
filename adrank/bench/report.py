"""Leaderboard tables (Markdown + CSV) and the AUC-vs-train-time plot.

A single-task dataset gets one AUC/logloss column pair (with the BARS reference where there
is one). A multi-task dataset gets a column pair per *headline*: each task (a task with a
``given`` label scored on the rows where it is 1: CVR AUC on clicked rows) and, for a
click/conversion funnel, CTCVR (``pctcvr``, all impressions), plus gAUC where the dataset
has a group; the plot gets one panel per headline.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adrank.bench.domains import domain_tables
from adrank.bench.provenance import (
    STALE,
    VERIFIED_MARK,
    Verification,
    code_cells,
    machine_line,
    read_verifications,
)
from adrank.bench.reference import REFERENCE_LABEL, REFERENCES
from adrank.bench.runner import BenchmarkRun
from adrank.data.feature_map import TaskInfo
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
    #: metric name -> (mean, sample std) over seeds, for every test metric the runs record
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    embedding_dim: int | None = None
    #: the ``model@task`` rows a ``model (per task)`` row combines
    parts: tuple[str, ...] = ()
    #: some seed was trained while the machine was busy: its time is not comparable
    loaded: bool = False
    #: the code version(s) that trained the seeds (:func:`adrank.bench.provenance.code_cells`)
    code: str = "–"
    #: the machines the seeds recorded (empty for rows recorded before runs named theirs)
    machines: tuple[str, ...] = ()
    #: mean :func:`~adrank.bench.provenance.speed_index` of the seeds that timed one
    speed_index: float | None = None

    @property
    def time_cell(self) -> str:
        return f"{self.train_time_s:.0f}" + (" †" if self.loaded else "")

    @property
    def delta(self) -> float | None:
        return None if self.reference_auc is None else self.auc_mean - self.reference_auc


def aggregate(
    runs: list[BenchmarkRun], dataset: str, verifications: Sequence[Verification] = ()
) -> list[LeaderboardRow]:
    """One row per model (mean ± sample std over seeds), sorted by mean test AUC; the code
    column from the runs' versions, or from ``verifications`` for rows without one."""
    refs = REFERENCES.get(dataset, {})
    codes = code_cells([(r.model, r.code) for r in runs], verifications)
    out: list[LeaderboardRow] = []
    for model in dict.fromkeys(r.model for r in runs):
        rs = [r for r in runs if r.model == model]
        auc = np.array([r.test_auc for r in rs])
        ll = np.array([r.test_logloss for r in rs])
        ddof = 1 if len(rs) > 1 else 0
        ref = refs.get(model)
        keys = [k for k in rs[0].metrics if all(k in r.metrics for r in rs)]
        metrics = {}
        for key in keys:
            values = np.array([r.metrics[key] for r in rs], dtype=np.float64)
            metrics[key] = (float(values.mean()), float(values.std(ddof=ddof)))
        dims = {r.embedding_dim for r in rs}
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
                metrics=metrics,
                embedding_dim=dims.pop() if len(dims) == 1 else None,
                parts=tuple(rs[0].parts),
                loaded=any(r.timed_under_load for r in rs),
                code=codes[model],
                machines=tuple(dict.fromkeys(r.machine for r in rs if r.machine)),
                speed_index=_mean_index(rs),
            )
        )
    return sorted(out, key=lambda r: -r.auc_mean)


def _mean_index(runs: Sequence[BenchmarkRun]) -> float | None:
    values = [r.speed_index for r in runs if r.speed_index]
    return float(np.mean(values)) if values else None


@dataclass(frozen=True)
class Headline:
    """A per-task column group of a multi-task leaderboard: metrics ``<key>_auc``,
    ``<key>_logloss`` (``<key>_gauc``), titled ``title``."""

    key: str
    title: str

    @property
    def short(self) -> str:
        return "CTCVR" if self.key == "pctcvr" else self.key


def headline_metrics(
    runs: Sequence[BenchmarkRun] | Sequence[LeaderboardRow],
    tasks: Sequence[TaskInfo] | None = None,
    dataset: str | None = None,
) -> list[Headline]:
    """The headlines of a multi-task leaderboard (empty for a single-task one).

    The tasks come from ``tasks`` (a feature map's), else from the registered ``dataset``'s
    schema, else from the recorded metric names (``<task>_auc``, in recorded order)."""
    if tasks is None and dataset is not None:
        from adrank.bench.runner import benchmark_tasks

        try:
            tasks = benchmark_tasks(dataset)
        except KeyError:  # not a registered dataset
            tasks = None
    if tasks is not None:
        if len(tasks) < 2:
            return []
        out = [Headline(t.name, _task_title(t)) for t in tasks]
        outputs = {t.output: t for t in tasks}
        if "pctr" in outputs and "pcvr" in outputs:
            out.append(Headline("pctcvr", _ctcvr_title(outputs["pctr"], outputs["pcvr"])))
        return out
    keys: dict[str, None] = {}
    for run in runs:
        for name in run.metrics:
            prefix, sep, metric = name.rpartition("_")
            if sep and prefix and metric == "auc":
                keys[prefix] = None
    if len(keys) < 2:
        return []
    return [Headline(k, "CTCVR AUC (pctcvr)" if k == "pctcvr" else f"{k} AUC") for k in keys]


def recorded_headlines(headlines: list[Headline], rows: Sequence[LeaderboardRow]) -> list[Headline]:
    """``headlines`` without those no row recorded (a board of ``model@like`` runs only has
    no ``love`` or CTCVR column); all of them when none was recorded at all."""
    kept = [h for h in headlines if any(f"{h.key}_auc" in r.metrics for r in rows)]
    return kept or headlines


def _task_title(task: TaskInfo) -> str:
    if task.given:
        return f"{task.name} AUC (CVR on {task.given}=1 rows)"
    return f"{task.name} AUC"


def _ctcvr_title(click: TaskInfo, conversion: TaskInfo) -> str:
    return f"CTCVR AUC ({click.label} & {conversion.label}, all rows)"


def _shown(rows: list[LeaderboardRow]) -> list[LeaderboardRow]:
    """Rows of a multi-task table: a per-task pair stands for its parts."""
    folded = {p for r in rows for p in r.parts}
    return [r for r in rows if r.model not in folded]


def _sort_key(headlines: list[Headline]):
    def key(row: LeaderboardRow) -> float:
        mean = row.metrics.get(f"{headlines[-1].key}_auc", (float("nan"), 0.0))[0]
        return -mean if np.isfinite(mean) else float("inf")

    return key


def to_markdown(
    rows: list[LeaderboardRow],
    dataset: str,
    title: str | None = None,
    notes: dict[str, str] | None = None,
    headlines: list[Headline] | None = None,
) -> str:
    """The leaderboard table, then a "Notes" list (model -> its config's ``notes``).

    With ``headlines`` (default: :func:`headline_metrics` of ``rows`` and ``dataset``) the
    table has per-task columns (:func:`multitask_table`)."""
    fmt = lambda v, p=4: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    if headlines is None:
        headlines = headline_metrics(rows, dataset=dataset)
    buf = io.StringIO()
    buf.write(f"# {title or f'Leaderboard: {dataset}'}\n\n")
    _write_machines(buf, rows)
    if headlines:
        rows = _shown(rows)
        buf.write(multitask_table(rows, headlines))
        buf.write(domain_tables(rows))
        _write_load_note(buf, rows)
        _write_code_note(buf, rows)
        _write_notes(buf, rows, notes)
        return buf.getvalue()
    buf.write(
        f"| model | seeds | test AUC (mean ± std) | test logloss | {REFERENCE_LABEL} AUC / "
        "logloss | Δ AUC | params | epochs | train time (s) | train samples/s | code |\n"
    )
    buf.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
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
            f"{r.num_parameters:,} | {r.epochs_mean:.1f} | {r.time_cell} | "
            f"{r.train_samples_per_s:,.0f}{' †' if r.loaded else ''} | {r.code} |\n"
        )
    buf.write(domain_tables(rows))
    _write_load_note(buf, rows)
    _write_code_note(buf, rows)
    _write_notes(buf, rows, notes)
    return buf.getvalue()


def _write_machines(buf: io.StringIO, rows: list[LeaderboardRow]) -> None:
    recorded = list(dict.fromkeys(m for r in rows for m in r.machines))
    if not recorded:
        buf.write(f"Machine: {machine_line()} (this report's; the runs record none)\n\n")
    elif len(recorded) == 1:
        buf.write(f"Machine (recorded by the runs): {recorded[0]}\n\n")
    else:
        buf.write("Machines (recorded by the runs):\n\n")
        buf.writelines(f"- {m}\n" for m in recorded)
        buf.write("\n")
    if any(not r.machines for r in rows) and recorded:
        buf.write("Some rows were recorded before runs named their machine.\n\n")
    timed = sorted((r.speed_index, r.model) for r in rows if r.speed_index)
    if timed:
        (low, slow), (high, fast) = timed[0], timed[-1]
        buf.write(
            "Speed index (reference MLP steps/s at the run's threads, timed just before each "
            "run; `runs.jsonl` `speed_index`): "
            + (
                f"{low:,.1f} for every timed row"
                if low == high
                else f"{low:,.1f} ({slow}) to {high:,.1f} ({fast})"
            )
            + f", {len(timed)} of {len(rows)} rows timed. Train times compare across machines "
            "once scaled by it (a row at half the index took about twice as long).\n\n"
        )


def _write_code_note(buf: io.StringIO, rows: list[LeaderboardRow]) -> None:
    buf.write("\nCode: the adrank commit that trained the row's seeds (`runs.jsonl` `code`).")
    if any(r.code.endswith(VERIFIED_MARK) for r in rows):
        buf.write(
            f" {VERIFIED_MARK}: the seeds record no version; this commit re-trained one of them "
            "bit for bit (`adrank benchmark --verify MODEL --seed S --record`, "
            "`verified.jsonl`), so the row is what that code produces."
        )
    if any(r.code == STALE for r in rows):
        buf.write(
            f" {STALE}: re-training a seed with the current code did not reproduce the row "
            "(`verified.jsonl`): the row is stale; re-run it before quoting it."
        )
    if any(r.code == "–" for r in rows):
        buf.write(
            " –: recorded without a code version and not verified since: it may come from "
            "older training code; re-run or verify it before quoting it."
        )
    buf.write("\n")


def _write_load_note(buf: io.StringIO, rows: list[LeaderboardRow]) -> None:
    if any(r.loaded for r in rows):
        buf.write(
            "\n† Trained while the machine was busy (the 1-minute load average exceeded its CPU "
            "count at the start or end of training, by more than half a core for a run whose "
            "threads fill every CPU): accuracy is unaffected, but the time is "
            "not comparable with quiet rows; re-time it on a quiet machine before quoting it.\n"
        )


def _write_notes(
    buf: io.StringIO, rows: list[LeaderboardRow], notes: dict[str, str] | None
) -> None:
    listed = [(r.model, notes[r.model]) for r in rows if notes and notes.get(r.model)]
    if listed:
        buf.write("\n## Notes\n\n")
        for model, text in listed:
            buf.write(f"- **{model}**: {text}\n")


def _mean_std(row: LeaderboardRow, key: str) -> str:
    value = row.metrics.get(key)
    if value is None or not np.isfinite(value[0]):
        return "–"
    return f"{value[0]:.4f} ± {value[1]:.4f}"


def _gauc_keys(rows: list[LeaderboardRow], headlines: list[Headline]) -> list[Headline]:
    return [h for h in headlines if any(f"{h.key}_gauc" in r.metrics for r in rows)]


def multitask_table(rows: list[LeaderboardRow], headlines: list[Headline]) -> str:
    """The protocol paragraph and the per-task table, sorted by the last headline's AUC
    (CTCVR on a click/conversion dataset)."""
    rows = sorted(rows, key=_sort_key(headlines))
    gauc = _gauc_keys(rows, headlines)
    buf = io.StringIO()
    buf.write(_protocol(rows))
    cols = ["model", "seeds"]
    for h in headlines:
        cols += [h.title, f"{h.short} logloss"]
    cols += [f"{h.short} gAUC" for h in gauc]
    cols += ["params", "embedding dim", "epochs", "train time (s)", "code"]
    buf.write("| " + " | ".join(cols) + " |\n")
    buf.write("|" + "---|" * len(cols) + "\n")
    for r in rows:
        cells = [r.model, str(r.seeds)]
        for h in headlines:
            cells += [_mean_std(r, f"{h.key}_auc"), _mean_std(r, f"{h.key}_logloss")]
        cells += [_mean_std(r, f"{h.key}_gauc") for h in gauc]
        dim = "–" if r.embedding_dim is None else str(r.embedding_dim)
        cells += [f"{r.num_parameters:,}", dim, f"{r.epochs_mean:.1f}", r.time_cell, r.code]
        buf.write("| " + " | ".join(cells) + " |\n")
    return buf.getvalue()


def _protocol(rows: list[LeaderboardRow]) -> str:
    dims = sorted({r.embedding_dim for r in rows if r.embedding_dim is not None})
    if len(dims) == 1:
        same = f"All models use embedding dim {dims[0]}."
    else:
        listed = ", ".join(f"{r.model} {r.embedding_dim or '–'}" for r in rows)
        same = f"Embedding dims differ ({listed})."
    pairs = [r.model for r in rows if r.parts]
    baseline = (
        f" Per-task baselines ({', '.join(pairs)}): one single-task run per task "
        "(`MODEL@TASK`; a task with `given` is trained on the rows where that label is 1, "
        "e.g. clicked rows), scored together; their CTCVR prediction is pCTR × pCVR of the "
        "two runs' test predictions, scored by the same metric code. Their params, epochs "
        "and train time are the sums over the runs."
        if pairs
        else ""
    )
    return (
        "Protocol: one config per model (its shipped config for this dataset, selected on "
        f"validation, or its defaults), the same seeds for every model. {same}{baseline} "
        "Conversion AUC is scored on the rows where its `given` label is 1 (CVR on "
        "clicks); CTCVR AUC on all impressions.\n\n"
    )


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


def to_csv(rows: list[LeaderboardRow], headlines: list[Headline] | None = None) -> str:
    if headlines:
        return multitask_csv(_shown(rows), headlines)
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
            "code",
            "speed_index",
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
                r.code,
                "" if r.speed_index is None else f"{r.speed_index:.1f}",
            ]
        )
    return buf.getvalue()


def multitask_csv(rows: list[LeaderboardRow], headlines: list[Headline]) -> str:
    """One line per model: mean and std of every headline metric (AUC, logloss, gAUC)."""
    rows = sorted(rows, key=_sort_key(headlines))
    keys = [f"{h.key}_{m}" for h in headlines for m in ("auc", "logloss")]
    keys += [f"{h.key}_gauc" for h in _gauc_keys(rows, headlines)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["model", "seeds"]
        + [f"{k}_{s}" for k in keys for s in ("mean", "std")]
        + ["num_parameters", "embedding_dim", "epochs_mean", "train_time_s", "parts", "code"]
        + ["speed_index"]
    )
    for r in rows:
        values = []
        for k in keys:
            mean, std = r.metrics.get(k, (float("nan"), float("nan")))
            values += [f"{mean:.6f}", f"{std:.6f}"]
        dim = "" if r.embedding_dim is None else r.embedding_dim
        stats = [r.num_parameters, dim, f"{r.epochs_mean:.2f}", f"{r.train_time_s:.1f}"]
        index = "" if r.speed_index is None else f"{r.speed_index:.1f}"
        w.writerow([r.model, r.seeds, *values, *stats, " ".join(r.parts), r.code, index])
    return buf.getvalue()


def plot(
    rows: list[LeaderboardRow],
    path: Path,
    dataset: str,
    headlines: list[Headline] | None = None,
) -> bool:
    """Test AUC (mean ± std) against mean train time, one panel per headline (one panel for
    a single-task leaderboard); see :mod:`adrank.bench.plot`. False without matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: skipping %s (pip install adrank[plot])", path)
        return False
    from adrank.bench.plot import draw, leaderboard_panels

    fig, _ = draw(
        leaderboard_panels(rows, headlines or []),
        f"adrank on {dataset}: accuracy vs training time",
    )
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return True


def write_report(
    runs: list[BenchmarkRun],
    dataset: str,
    output_dir: Path,
    tasks: Sequence[TaskInfo] | None = None,
) -> list[LeaderboardRow]:
    """Write ``leaderboard.md``, ``.csv`` and ``.png``; ``tasks`` (a feature map's) names
    the headline columns of a multi-task dataset (default: the registered dataset's). The
    code column reads ``output_dir/verified.jsonl`` for rows without a version."""
    rows = aggregate(runs, dataset, read_verifications(output_dir))
    headlines = recorded_headlines(headline_metrics(runs, tasks, dataset), rows)
    output_dir.mkdir(parents=True, exist_ok=True)
    notes = config_notes(dataset, [r.model for r in rows])
    md = to_markdown(rows, dataset, notes=notes, headlines=headlines)
    atomic_write_text(output_dir / "leaderboard.md", md)
    atomic_write_text(output_dir / "leaderboard.csv", to_csv(rows, headlines))
    plot(_shown(rows) if headlines else rows, output_dir / "leaderboard.png", dataset, headlines)
    return rows
