"""Descriptive click rates by position, with Wilson score intervals."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["position_ctr", "wilson_interval"]


def wilson_interval(clicks: float, shown: float, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate ``clicks / shown`` (``(nan, nan)`` when
    nothing was shown). Unlike the normal interval it stays inside [0, 1] and is not empty
    for 0 clicks, the common case for a CTR cell."""
    if shown <= 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = clicks / shown
    denom = 1 + z * z / shown
    centre = (p + z * z / (2 * shown)) / denom
    half = z * math.sqrt(p * (1 - p) / shown + z * z / (4 * shown * shown)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def position_ctr(
    position: np.ndarray,
    clicks: np.ndarray,
    predicted: np.ndarray | None = None,
    level: float = 0.95,
) -> list[dict[str, float | str]]:
    """One row per distinct position (ascending): ``position``, ``shown``, ``clicks``,
    ``ctr`` with its Wilson interval ``lower``/``upper`` and, given ``predicted`` (N,),
    ``mean_pred`` (the model's mean pCTR there)."""
    position = np.asarray(position).reshape(-1)
    clicks = np.asarray(clicks, dtype=np.float64).reshape(-1)
    keys = np.unique(position)
    try:
        keys = sorted(keys, key=float)
    except (TypeError, ValueError):
        keys = list(keys)
    rows: list[dict[str, float | str]] = []
    for key in keys:
        mask = position == key
        n, c = float(mask.sum()), float(clicks[mask].sum())
        lo, hi = wilson_interval(c, n, level)
        row: dict[str, float | str] = {
            "position": str(key), "shown": n, "clicks": c, "ctr": c / n, "lower": lo, "upper": hi
        }  # fmt: skip
        if predicted is not None:
            row["mean_pred"] = float(np.asarray(predicted).reshape(-1)[mask].mean())
        rows.append(row)
    return rows
