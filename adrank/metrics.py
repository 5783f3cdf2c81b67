"""Evaluation metrics for CTR prediction: AUC, logloss, gAUC and calibration.

All functions take 1-D array-likes of length N (numpy arrays, lists, or CPU tensors via
``np.asarray``; an (N, 1) column counts as 1-D, several columns are refused rather than
pooled), are vectorized with numpy, and accumulate in float64. Labels must be 0/1 (NaN or
any other value is refused). Scores must be real; NaN is refused, and ±inf ranks like any
other score in :func:`auc` and :func:`gauc`. Probabilities (:func:`logloss`,
:func:`calibration`) must lie in [0, 1]: a value outside, or an infinite one, is refused
rather than clipped into a number.

AUC is the exact Mann-Whitney statistic with tied scores given their average rank, which
equals scikit-learn's ``roc_auc_score`` (trapezoidal ROC) including ties.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["auc", "calibration", "evaluate_all", "gauc", "logloss"]


def _one_column(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a 1-D array; an (N, 1) or (1, N) array is one column, a 2-D array of
    several columns (T tasks) is refused rather than flattened into one pooled metric."""
    array = np.asarray(values)
    if sum(dim != 1 for dim in array.shape) > 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {array.shape}")
    return array.reshape(-1)


def _labels_and_scores(
    y_true: ArrayLike, y_score: ArrayLike, what: str = "y_score"
) -> tuple[np.ndarray, np.ndarray]:
    y = _one_column(y_true, "y_true")
    s = _one_column(y_score, what)
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but {what} has {s.size}")
    if y.size == 0:
        raise ValueError("metrics need at least one example, got empty arrays")
    if y.dtype != np.bool_:
        pos = y == 1
        if not np.all(pos | (y == 0)):
            bad = np.unique(y[~(pos | (y == 0))])[:5]
            raise ValueError(f"y_true must contain only 0 and 1; found {bad.tolist()}")
        y = pos
    if not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.complexfloating):  # sorts lexicographically: no ranking
        raise ValueError(f"{what} must be real numbers, got dtype {s.dtype}")
    if np.isnan(s).any():
        raise ValueError(f"{what} contains NaN ({int(np.isnan(s).sum())} values)")
    return y, s


def _probabilities(p: np.ndarray, what: str) -> np.ndarray:
    """``p`` as float64, refusing values outside [0, 1] (infinite ones included): clipping
    them, as logloss clips 0 and 1, would turn a scoring bug into a plausible number."""
    p = p.astype(np.float64)
    outside = ~((p >= 0.0) & (p <= 1.0))
    if outside.any():
        bad = np.unique(p[outside])[:5]
        raise ValueError(
            f"{what} must be probabilities in [0, 1]; {int(outside.sum())} values are not, "
            f"e.g. {bad.tolist()}"
        )
    return p


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and value != value)


def _object_codes(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Int codes (N,) of an object array and its distinct values by code, for arrays that
    do not sort as they are (``None`` or NaN among the values, ints next to strings).

    Values equal in Python (``1``, ``1.0``) are one value; the values are ordered by type
    name, then text; every missing value (``None``, NaN) is the one value ``None``, last."""
    index: dict[Any, int] = {}
    raw = np.empty(values.size, dtype=np.int64)
    missing = object()
    for i, value in enumerate(values.tolist()):
        raw[i] = index.setdefault(missing if _missing(value) else value, len(index))
    keys = list(index)
    order = sorted(
        range(len(keys)),
        key=lambda k: (keys[k] is missing, type(keys[k]).__name__, str(keys[k])),
    )
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys))
    return rank[raw], [None if keys[k] is missing else keys[k] for k in order]


def _sortable(values: np.ndarray) -> tuple[np.ndarray, list[Any] | None]:
    """``values`` unchanged when they sort consistently, else (an object array holding a
    missing value or types that do not compare) their :func:`_object_codes` and the
    distinct values by code."""
    if values.dtype != object:
        return values, None
    if not any(_missing(v) for v in values.tolist()):
        try:
            np.sort(values)
            return values, None
        except TypeError:
            pass
    codes, uniques = _object_codes(values)
    return codes, uniques


def _tie_block_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of every run of equal key tuples in lexicographically sorted keys."""
    n = sorted_keys[0].size
    change = np.zeros(n, dtype=np.bool_)
    change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve, exact, with ties handled by average ranks.

    Args:
        y_true: (N,) 0/1 labels.
        y_score: (N,) real scores (any monotone transform of the probability gives the same
            AUC; ±inf, e.g. the logit of p = 1.0, rank like any other score, NaN is refused).

    Raises:
        ValueError: if only one class is present (AUC is undefined), or on labels other than
            0/1, NaN or complex scores, several columns.
    """
    y, s = _labels_and_scores(y_true, y_score)
    n = y.size
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive" if n_neg == 0 else "negative"
        raise ValueError(f"AUC is undefined: all {n} labels are {only} (need both classes)")
    order = np.argsort(s)  # ties get average ranks, so stability is not needed
    s_sorted = s[order]
    y_sorted = y[order]
    starts = _tie_block_starts(s_sorted)
    ends = np.append(starts[1:], n)
    # 1-based ranks start+1..end share their average (start + 1 + end) / 2.
    avg_rank = (starts + ends + 1).astype(np.float64) / 2.0
    pos_in_block = np.add.reduceat(y_sorted.astype(np.float64), starts)
    rank_sum = float(np.dot(pos_in_block, avg_rank))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))


def logloss(y_true: ArrayLike, y_prob: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``. (N,) -> float.

    The clipping (in float64, whatever the input dtype) only keeps p = 0 and p = 1 finite;
    values outside [0, 1] (and infinite ones) are refused with a ``ValueError``.
    """
    y, p = _labels_and_scores(y_true, y_prob, "y_prob")
    p = np.clip(_probabilities(p, "y_prob"), eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def gauc(y_true: ArrayLike, y_score: ArrayLike, groups: ArrayLike) -> float:
    """Group AUC: per-group AUC averaged with weights = group size (impressions).

    ``sum_u n_u * AUC_u / sum_u n_u`` over the groups (e.g. users) u that have both classes,
    with ``n_u`` the group's rows; groups with only one class get no weight. Vectorized: one
    sort by (group, score), tie-aware rank sums per group via ``reduceat`` / ``bincount``.

    Args:
        y_true: (N,) 0/1 labels.
        y_score: (N,) scores (as for :func:`auc`).
        groups: (N,) group ids of any dtype, in any order; an object array may mix types.
            A missing id (NaN, ``None``) belongs to no group: its rows are left out.

    Raises:
        ValueError: if no group has both classes.
    """
    y, s = _labels_and_scores(y_true, y_score)
    g = _one_column(groups, "groups")
    if g.shape != y.shape:
        raise ValueError(f"y_true has {y.size} values but groups has {g.size}")
    g, uniques = _sortable(g)
    if uniques is not None and uniques[-1] is None:
        # each row without a group its own one-class group (as NaN ids are): left out
        missing = g == len(uniques) - 1
        g[missing] = len(uniques) + np.arange(int(missing.sum()))
    # Same order as np.lexsort((s, g)) but faster: sort by score, then stable by group.
    order = np.argsort(s)
    order = order[np.argsort(g[order], kind="stable")]
    g_sorted, s_sorted, y_sorted = g[order], s[order], y[order].astype(np.float64)
    n = y.size
    group_starts = _tie_block_starts(g_sorted)
    group_sizes = np.diff(np.append(group_starts, n))
    group_index = np.repeat(np.arange(group_starts.size), group_sizes)  # (N,)
    blocks = _tie_block_starts(g_sorted, s_sorted)  # ties never span two groups
    block_ends = np.append(blocks[1:], n)
    block_group = group_index[blocks]
    # Average 1-based rank within the group of the block's rows.
    avg_rank = (blocks + block_ends + 1).astype(np.float64) / 2.0 - group_starts[block_group]
    pos_in_block = np.add.reduceat(y_sorted, blocks)
    rank_sum = np.bincount(block_group, weights=pos_in_block * avg_rank, minlength=len(group_sizes))
    n_pos = np.add.reduceat(y_sorted, group_starts)
    n_neg = group_sizes - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        raise ValueError(
            f"gAUC is undefined: none of the {group_starts.size} groups has both classes"
        )
    p, q = n_pos[valid], n_neg[valid]
    group_auc = (rank_sum[valid] - p * (p + 1) / 2.0) / (p * q)
    weights = group_sizes[valid].astype(np.float64)
    return float(np.dot(group_auc, weights) / weights.sum())


def calibration(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Calibration summary of probabilities.

    Returns a dict with ``ratio`` (mean predicted / mean observed CTR; ``inf`` when no
    positives but positive predictions), ``ece`` (expected calibration error over
    ``n_bins`` equal-width probability bins: sum_b n_b / N * |mean_pred_b - mean_obs_b|),
    ``mean_pred``, ``mean_obs``, and per-bin lists ``bin_count``, ``bin_pred``, ``bin_obs``
    (empty bins have count 0 and NaN means). Bin k holds ``k / n_bins <= p < (k + 1) /
    n_bins``; p = 1.0 is in the last bin. Probabilities outside [0, 1] are refused.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    y, p = _labels_and_scores(y_true, y_prob, "y_prob")
    p = _probabilities(p, "y_prob")
    yf = y.astype(np.float64)
    n = y.size
    mean_pred = float(p.mean())
    mean_obs = float(yf.mean())
    if mean_obs > 0:
        ratio = mean_pred / mean_obs
    else:
        ratio = float("inf") if mean_pred > 0 else float("nan")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    sum_pred = np.bincount(bins, weights=p, minlength=n_bins)
    sum_obs = np.bincount(bins, weights=yf, minlength=n_bins)
    ece = float(np.abs(sum_pred - sum_obs).sum() / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_pred = sum_pred / count
        bin_obs = sum_obs / count
    return {
        "ratio": ratio,
        "ece": ece,
        "mean_pred": mean_pred,
        "mean_obs": mean_obs,
        "bin_count": count.astype(np.int64).tolist(),
        "bin_pred": bin_pred.tolist(),
        "bin_obs": bin_obs.tolist(),
    }


def evaluate_all(
    y_true: ArrayLike, y_prob: ArrayLike, groups: ArrayLike | None = None
) -> dict[str, float]:
    """The standard CTR metric set for one task.

    Returns ``auc``, ``logloss``, ``gauc`` (only when ``groups`` is given),
    ``calibration_ratio`` and ``ece``. Shapes: (N,) each.
    """
    out = {"auc": auc(y_true, y_prob), "logloss": logloss(y_true, y_prob)}
    if groups is not None:
        out["gauc"] = gauc(y_true, y_prob, groups)
    cal = calibration(y_true, y_prob)
    out["calibration_ratio"] = float(cal["ratio"])
    out["ece"] = float(cal["ece"])
    return out
