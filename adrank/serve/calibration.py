"""Post-hoc calibration of pCTR: isotonic regression (PAV) and Platt scaling.

A calibration map is a plain JSON-able dict stored in the run directory as
``calibration.json`` (see :func:`adrank.artifact.save_calibration`)::

    {"version": 1, "method": "isotonic" | "platt", "labels": ["click", ...],
     "maps": {"click": {"x": [...], "y": [...]}        # isotonic: knots, linear interpolation
                       | {"a": 1.3, "b": -0.2}},       # platt: sigmoid(a * logit(p) + b)
     "fitted_on": "valid", "rows": 57722, "report": {...}}

Isotonic regression is fitted with pool-adjacent-violators on the distinct predicted values
(weighted by their counts); predictions are linearly interpolated between the kept knots and
clipped at the ends, which is what scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``
does. Platt scaling fits two parameters by Newton's method on the logit of the uncalibrated
probability (maximum likelihood, no target smoothing).

``calibrate(run_dir)`` fits the map on the run's validation split, reports predicted/observed
ratio and ECE before and after (on the validation split and, when present, on the held-out
test split), and stores it in the artifact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adrank.metrics import calibration as calibration_summary

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT_VERSION = 1
CalibrationMethod = Literal["isotonic", "platt"]
METHODS: tuple[str, ...] = ("isotonic", "platt")
_EPS = 1e-7
#: calibrated probabilities are kept this far from 0 and 1
OUTPUT_EPS = 1e-6


# ----------------------------------------------------------------------- isotonic ----
def pool_adjacent_violators(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit of ``y`` (N,) -> fitted values (N,).

    Classic stack-based PAV: each incoming point starts a block; while the last block's
    mean is below the previous block's mean, the two blocks are pooled. O(N) amortized.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if y.shape != w.shape or y.ndim != 1:
        raise ValueError(f"y and weights must be 1-D of equal length, got {y.shape}, {w.shape}")
    means: list[float] = []
    sums: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        sums.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, n2 = means.pop(), sums.pop(), sizes.pop()
            total = sums[-1] + w2
            means[-1] = (means[-1] * sums[-1] + m2 * w2) / total
            sums[-1] = total
            sizes[-1] += n2
    return np.repeat(np.asarray(means), np.asarray(sizes, dtype=np.int64))


def fit_isotonic(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Isotonic map from uncalibrated probabilities (N,) and 0/1 labels (N,).

    Returns knots ``{"x": [...], "y": [...]}``; only the end points of each constant block are
    kept (interior points are redundant under linear interpolation).
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    t = np.asarray(labels, dtype=np.float64).ravel()
    if p.size == 0 or p.shape != t.shape:
        raise ValueError(f"need equally many probabilities and labels, got {p.size}, {t.size}")
    x, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    y_mean = np.bincount(inverse, weights=t) / counts
    fitted = np.clip(pool_adjacent_violators(y_mean, counts.astype(np.float64)), 0.0, 1.0)
    keep = np.ones(x.size, dtype=bool)
    if x.size > 2:
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return {"x": x[keep].tolist(), "y": fitted[keep].tolist()}


# -------------------------------------------------------------------------- platt ----
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def fit_platt(
    probs: np.ndarray, labels: np.ndarray, max_iter: int = 50, tol: float = 1e-10
) -> dict[str, float]:
    """Platt scaling ``sigmoid(a * logit(p) + b)`` fitted by Newton's method on the
    log-loss (2x2 Hessian, tiny ridge for stability). Inputs (N,), returns ``{"a", "b"}``."""
    z = _logit(np.asarray(probs, dtype=np.float64).ravel())
    t = np.asarray(labels, dtype=np.float64).ravel()
    if z.size == 0 or z.shape != t.shape:
        raise ValueError(f"need equally many probabilities and labels, got {z.size}, {t.size}")
    design = np.stack([z, np.ones_like(z)], axis=1)  # (N, 2)
    theta = np.array([1.0, 0.0])
    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (q - t)
        hess = (design * (q * (1.0 - q))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if float(np.abs(step).max()) < tol:
            break
    return {"a": float(theta[0]), "b": float(theta[1])}


# ------------------------------------------------------------------------- apply -----
def _apply_one(method: str, params: dict[str, Any], p: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        return np.interp(p, np.asarray(params["x"]), np.asarray(params["y"]))
    if method == "platt":
        z = params["a"] * _logit(p) + params["b"]
        return 1.0 / (1.0 + np.exp(-z))
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def apply_calibration(calibration: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    """Apply a stored calibration map to probabilities (N,) or (N, T) (T = len(labels)).

    Outputs are clipped to ``[OUTPUT_EPS, 1 - OUTPUT_EPS]``: an isotonic block of only
    negatives (or only positives) in the validation split must not become a certain
    outcome, which would make an ad ineligible (pCTR 0) or priced as a sure click."""
    method = calibration["method"]
    labels = calibration["labels"]
    maps = calibration["maps"]
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if len(labels) != 1:
            raise ValueError(f"calibration has {len(labels)} tasks but probs are 1-D")
        out = _apply_one(method, maps[labels[0]], p)
    elif p.shape[1] != len(labels):
        raise ValueError(f"calibration has tasks {labels}, probs have {p.shape[1]} columns")
    else:
        columns = [_apply_one(method, maps[name], p[:, i]) for i, name in enumerate(labels)]
        out = np.stack(columns, axis=1)
    return np.clip(out, OUTPUT_EPS, 1.0 - OUTPUT_EPS)


def fit_calibration(
    probs: np.ndarray, labels: np.ndarray, label_names: list[str], method: str = "isotonic"
) -> dict[str, Any]:
    """Fit one map per task. ``probs``/``labels``: (N,) or (N, T) in ``label_names`` order."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    if p.shape[1] != len(label_names) or y.shape != p.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match tasks {label_names}")
    fit = fit_isotonic if method == "isotonic" else fit_platt
    maps = {name: fit(p[:, i], y[:, i]) for i, name in enumerate(label_names)}
    return {
        "version": CALIBRATION_FORMAT_VERSION,
        "method": method,
        "labels": list(label_names),
        "maps": maps,
    }


# ------------------------------------------------------------------------- run dir ---
@dataclass
class CalibrationReport:
    """Before/after calibration on each evaluated split: ``{split: {"before": ..., "after":
    ...}}`` where each side holds ``ratio`` (mean predicted / observed) and ``ece``."""

    run_dir: Path
    method: str
    rows: int
    splits: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rows": self.rows, "splits": self.splits}


def _summary(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    s = calibration_summary(y, p, n_bins=n_bins)
    return {k: float(s[k]) for k in ("ratio", "ece", "mean_pred", "mean_obs")}


def _split_predictions(art: Any, prepared: Any, split: str) -> Any:
    from adrank.artifact import load_split
    from adrank.train.evaluation import as_eval_loader, collect_predictions

    if split not in prepared.splits:
        return None
    data = load_split(prepared, split)
    # The raw model (never an earlier calibration) is what the new map is fitted on.
    return collect_predictions(art.model, as_eval_loader(data, art.config.train.eval_batch_size))


def calibrate(
    run_dir: str | Path,
    method: str = "isotonic",
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    n_bins: int = 10,
) -> CalibrationReport:
    """Fit ``method`` on the run's validation split, store it as ``calibration.json`` (the
    manifest is rewritten atomically) and return the before/after report."""
    from adrank.artifact import load_artifact, open_prepared_data, save_calibration

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    art = load_artifact(run_dir)
    prepared = open_prepared_data(art, data_dir=data_dir, cache_dir=cache_dir)
    valid = _split_predictions(art, prepared, "valid")
    if valid is None:
        raise ValueError(f"{run_dir}: the prepared data has no 'valid' split to calibrate on")
    names = list(art.feature_map.labels)
    cal = fit_calibration(valid.probs, valid.labels, names, method)
    report = CalibrationReport(Path(run_dir), method, len(valid.probs))
    evaluated = {"valid": valid}
    test = _split_predictions(art, prepared, "test")
    if test is not None:
        evaluated["test"] = test
    for split, preds in evaluated.items():
        p = np.asarray(preds.probs, dtype=np.float64).reshape(len(preds.probs), -1)
        y = preds.labels.reshape(len(preds.labels), -1)
        after = apply_calibration(cal, p if p.shape[1] > 1 else p[:, 0]).reshape(p.shape)
        for i, name in enumerate(names):
            key = split if len(names) == 1 else f"{split}/{name}"
            report.splits[key] = {
                "before": _summary(y[:, i], p[:, i], n_bins),
                "after": _summary(y[:, i], after[:, i], n_bins),
            }
    cal.update({"fitted_on": "valid", "rows": report.rows, "report": report.splits})
    save_calibration(run_dir, cal)
    logger.info("stored %s calibration in %s", method, run_dir)
    return report
