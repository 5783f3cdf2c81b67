"""Calibration a person can look at: reliability diagrams and per-position CTR curves (PNG).

Needs matplotlib (``pip install adrank[plot]``); every writer raises ``ImportError`` with that
hint without it. Files are written atomically (a temp file renamed into place).

* :func:`plot_reliability`: mean observed rate against mean predicted probability in equal-
  count bins (quantiles of the predictions), each point with its Wilson interval and sized
  by its row count, next to the diagonal; the title gives pred/obs and the equal-width ECE
  of :func:`adrank.metrics.calibration`;
* :func:`plot_position_ctr`: click rate by position with Wilson intervals, one line per
  curve (e.g. per logging policy, or observed vs the model's mean pCTR);
* :func:`field_calibration`: pred/obs by a field's values through the slice API
  (:func:`adrank.train.evaluation.slice_metrics`) and the field-level calibration error
  ``sum_v n_v / N * |mean_pred_v - mean_obs_v|``;
* :func:`write_evaluation_plots`: what ``adrank evaluate --plots DIR`` writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adrank.ope.positions import position_ctr, wilson_interval
from adrank.utils import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from adrank.data.feature_map import FeatureMap
    from adrank.train.evaluation import Predictions

__all__ = [
    "field_calibration",
    "plot_position_ctr",
    "plot_reliability",
    "pyplot",
    "save_png",
    "write_evaluation_plots",
]

log = logging.getLogger(__name__)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (an ImportError naming the extra without it)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - exercised without the extra only
        raise ImportError("plots need matplotlib: pip install adrank[plot]") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG through a temp file, close it, return ``path``."""
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    pyplot().close(fig)
    return path


def plot_reliability(
    labels: np.ndarray, probs: np.ndarray, path: Path, title: str = "", n_bins: int = 10
) -> Path:
    """A reliability diagram of ``probs`` (N,) against 0/1 ``labels`` (N,) as a PNG.

    Bins hold equal numbers of rows (quantiles of the predictions), so a low-CTR model whose
    predictions all sit below 0.1 still gets ``n_bins`` points; the title gives pred/obs and
    the equal-width ECE of :func:`adrank.metrics.calibration`."""
    from adrank.metrics import calibration

    cal = calibration(labels, probs, n_bins=n_bins)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(order))) if len(g)]
    pred = np.array([p[g].mean() for g in groups])
    obs = np.array([y[g].mean() for g in groups])
    count = np.array([len(g) for g in groups], dtype=np.float64)
    bounds = np.array([wilson_interval(o * n, n) for o, n in zip(obs, count, strict=True)])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    top = float(max(pred.max(initial=0), bounds[:, 1].max(initial=0), 1e-3)) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.errorbar(
        pred, obs, yerr=[obs - bounds[:, 0], bounds[:, 1] - obs], fmt="none", ecolor="C0",
        alpha=0.6,
    )  # fmt: skip
    sizes = 20 + 180 * count / count.max()
    ax.scatter(pred, obs, s=sizes, color="C0", zorder=3, label="equal-count bins")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate (95% Wilson interval)")
    ax.set_title(
        f"{title}\npred/obs {cal['ratio']:.3f}, ECE {cal['ece']:.4f}, {len(labels):,} rows".strip()
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_png(fig, path)


def plot_position_ctr(
    curves: dict[str, list[dict[str, Any]]], path: Path, title: str = "", panels: int = 1
) -> Path:
    """Click rate by position as a PNG: ``curves`` maps a label to the rows of
    :func:`adrank.ope.position_ctr` (``position``, ``ctr``, ``lower``, ``upper``, optionally
    ``mean_pred``). A label ``"PANEL: NAME"`` puts the curve in panel PANEL (one panel per
    distinct prefix when ``panels > 1``)."""
    plt = pyplot()
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label, rows in curves.items():
        panel, _, name = label.rpartition(": ") if panels > 1 else ("", "", label)
        groups.setdefault(panel, {})[name] = rows
    fig, axes = plt.subplots(
        1, len(groups), figsize=(5 * len(groups), 4.5), dpi=110, squeeze=False, sharey=True
    )
    for ax, (panel, named) in zip(axes[0], groups.items(), strict=True):
        for i, (name, rows) in enumerate(named.items()):
            x = np.arange(len(rows)) + (i - (len(named) - 1) / 2) * 0.08
            ctr = np.array([r["ctr"] for r in rows])
            err = [ctr - [r["lower"] for r in rows], [r["upper"] for r in rows] - ctr]
            ax.errorbar(x, ctr, yerr=err, marker="o", capsize=4, label=f"{name} observed")
            if all("mean_pred" in r for r in rows):
                pred = [r["mean_pred"] for r in rows]
                ax.plot(x, pred, marker="x", linestyle="--", label=f"{name} mean pCTR")
        ax.set_xticks(np.arange(len(rows)), [str(r["position"]) for r in rows])
        ax.set_xlabel("position")
        ax.set_title(panel)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("click rate (95% Wilson interval)")
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def field_calibration(
    predictions: Predictions,
    feature_map: FeatureMap,
    by: str | np.ndarray,
    values: dict[int, str] | None = None,
    task: str | None = None,
    min_rows: int = 1,
) -> dict[str, Any]:
    """Pred/obs by a field's values: per value ``rows``, ``mean_pred``, ``mean_obs`` and
    ``ratio`` (the slice API's ``calibration_ratio``), and ``error``, the field-level
    calibration error ``sum_v n_v / N * |mean_pred_v - mean_obs_v|`` over the values kept.
    ``by``/``values``/``min_rows`` are those of :func:`slice_metrics`; ``task`` names the
    task (default: the first one the predictions cover); a conditional task (``given:``)
    is scored on its given rows, as the slice metrics score it."""
    from adrank.train.evaluation import role_value_names, slice_metrics, slice_rows

    if values is None and isinstance(by, str):  # a vocab role's slices carry its values' names
        values = role_value_names(feature_map, by)
    slices = slice_metrics(predictions, feature_map, by, values=values, min_rows=min_rows)
    keys = predictions.roles[by] if isinstance(by, str) else np.asarray(by).reshape(-1)
    outputs = predictions.by_output()
    chosen = [t for t in feature_map.tasks if t.output in outputs and task in (None, t.name)]
    if not chosen:
        raise KeyError(f"no predicted task {task!r}; tasks: {[t.name for t in feature_map.tasks]}")
    probs = outputs[chosen[0].output]
    y = predictions.labels[:, feature_map.label_index(chosen[0].label)]
    output = chosen[0].name
    scored = np.ones(len(y), dtype=bool)
    if chosen[0].given:  # pcvr on clicked rows, as slice_metrics scores it
        scored = predictions.labels[:, feature_map.label_index(chosen[0].given)] == 1
    per_value: dict[str, dict[str, float]] = {}
    total, error = 0.0, 0.0
    for name, rows in slice_rows(keys, values):  # the slices slice_metrics scored
        metrics = slices.get(name)
        if metrics is None:  # fewer than min_rows rows
            continue
        rows = rows & scored
        if not rows.any():
            continue
        pred, obs = float(probs[rows].mean()), float(y[rows].mean())
        # the task's own ratio: the unprefixed one of a multi-task dataset is the mean
        # over its tasks
        ratio = metrics.get(f"{output}_calibration_ratio", metrics.get("calibration_ratio"))
        per_value[name] = {"rows": float(rows.sum()), "mean_pred": pred, "mean_obs": obs}
        per_value[name]["ratio"] = float("nan") if ratio is None else float(ratio)
        total += rows.sum()
        error += rows.sum() * abs(pred - obs)
    return {"values": per_value, "error": error / total if total else float("nan")}


def write_evaluation_plots(
    predictions: Predictions, feature_map: FeatureMap, out_dir: Path, title: str = ""
) -> list[Path]:
    """``reliability.png`` (per binary task when there are several) and, when the
    predictions carry a ``position`` role, ``position_ctr.png`` (observed click rate and the
    mean pCTR by position) in ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    probs = predictions.by_output()
    written = []
    binary = [t for t in feature_map.tasks if t.type == "binary" and t.output in probs]
    for task in binary:
        y = predictions.labels[:, feature_map.label_index(task.label)]
        rows = np.ones(len(y), dtype=bool)
        if task.given:
            rows = predictions.labels[:, feature_map.label_index(task.given)] == 1
        name = "reliability.png" if len(binary) == 1 else f"reliability_{task.name}.png"
        written.append(
            plot_reliability(
                y[rows], probs[task.output][rows], out_dir / name, f"{title} {task.name}"
            )
        )
    if "position" in predictions.roles and binary:
        task = binary[0]
        y = predictions.labels[:, feature_map.label_index(task.label)]
        rows = position_ctr(predictions.roles["position"], y, probs[task.output])
        role = feature_map.roles.get("position")
        names = {str(i + 1): v for i, v in enumerate(role.values)} if role and role.values else {}
        for r in rows:
            r["position"] = names.get(str(r["position"]), r["position"])
        written.append(
            plot_position_ctr(
                {task.name: rows}, out_dir / "position_ctr.png", f"{title} by position"
            )
        )
    return written
