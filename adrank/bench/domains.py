"""Per-domain leaderboard tables: test AUC, logloss and gAUC per domain next to the overall
figures, from the ``METRIC@DOMAIN`` metrics a run records on data with a ``domain`` role
(:func:`adrank.bench.runner.domain_metrics`).

:func:`domain_cells` is the shared piece: mean ± sample std over seeds of one metric per
domain; :func:`domain_tables` renders a leaderboard's rows; ``benchmarks/multidomain.py``
uses the same cells for its pooled / per-domain / multi-domain comparison.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

#: the metrics shown per domain, with their column titles
DOMAIN_METRICS: tuple[tuple[str, str], ...] = (("auc", "AUC"), ("logloss", "logloss"),
                                               ("gauc", "gAUC"))  # fmt: skip


def domain_names(metric_keys: Sequence[str]) -> list[str]:
    """The domains named by ``METRIC@DOMAIN`` keys, in first-seen order."""
    return list(dict.fromkeys(k.split("@", 1)[1] for k in metric_keys if "@" in k))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value) of finite ``values``; NaN when none."""
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1) if arr.size > 1 else 0.0)


def cell(value: tuple[float, float] | None) -> str:
    """``mean ± std`` to 4 decimals, ``–`` when missing."""
    if value is None or not np.isfinite(value[0]):
        return "–"
    return f"{value[0]:.4f} ± {value[1]:.4f}"


def domain_cells(
    metrics: Mapping[str, tuple[float, float]], metric: str, domains: Sequence[str]
) -> list[str]:
    """One ``mean ± std`` cell of ``metric`` per domain (``–`` where the run has none)."""
    return [cell(metrics.get(f"{metric}@{d}")) for d in domains]


def domain_tables(rows: Sequence[object]) -> str:
    """Markdown tables, one per metric of :data:`DOMAIN_METRICS`: a row per leaderboard row
    (anything with ``model``, ``seeds`` and ``metrics``: name -> (mean, std)), the overall
    figure and one column per domain; empty when no row has per-domain metrics."""
    keys = [k for r in rows for k in r.metrics]  # type: ignore[attr-defined]
    domains = domain_names(keys)
    if not domains:
        return ""
    buf = io.StringIO()
    buf.write("\n## Per domain\n\nTest metrics per value of the data's `domain` role "
              "(mean ± std over seeds; `all` is the whole test set).\n")  # fmt: skip
    for metric, title in DOMAIN_METRICS:
        if not any(f"{metric}@{d}" in keys for d in domains):
            continue
        cols = ["model", "seeds", f"all {title}", *(f"{d} {title}" for d in domains)]
        buf.write("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in rows:
            m = r.metrics  # type: ignore[attr-defined]
            cells = [r.model, str(r.seeds), cell(m.get(metric))]  # type: ignore[attr-defined]
            buf.write("| " + " | ".join(cells + domain_cells(m, metric, domains)) + " |\n")
    return buf.getvalue()
