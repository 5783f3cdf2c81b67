"""Post-hoc calibration per output: isotonic regression (PAV) and Platt scaling.

A calibration map is a plain JSON-able dict stored in the run directory as
``calibration.json`` (see :func:`adrank.artifact.save_calibration`)::

    {"version": 2, "method": "isotonic" | "platt", "outputs": ["pctr", "pcvr"],
     "maps": {"pctr": {"x": [...], "y": [...]}     # isotonic: knots, linear interpolation
                      | {"a": 1.3, "b": -0.2}},    # platt: sigmoid(a * logit(p) + b)
     "fitted_rows": {"pctr": 57722, "pcvr": 4034},
     "derived": ["pctcvr"], "fitted_on": "valid", "rows": 57722, "report": {...}}

There is one map per output the model emits (``Predictor.model_outputs``), each fitted on
the validation rows where that output's task is defined: ``pctr`` on every impression,
``pcvr`` on the clicked rows only (its task's ``given`` label is 1), ``pctcvr`` (when a model
emits it) on every impression against click × conversion. Outputs the model does not emit
are derived from the calibrated ones (``pctcvr = pctr × pcvr``; ``pcvr = pctcvr / pctr``),
never calibrated on their own, so the derivation identities hold after calibration too; their
pred/obs ratio and ECE are still reported before and after. Regression outputs are not
calibrated.

Format version 1 (one map per label column, ``"labels": [...]``) still loads: its maps are
read as the maps of the outputs of those labels' tasks (:func:`output_calibration`); a
single-label file is the map of the single output.

Isotonic regression is fitted with pool-adjacent-violators on the distinct predicted values
(weighted by their counts); predictions are linearly interpolated between the kept knots and
clipped at the ends, which is what scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``
does. Platt scaling fits two parameters by Newton's method on the logit of the uncalibrated
probability (maximum likelihood, no target smoothing).

``calibrate(run_dir)`` fits the maps on the run's validation split (after the negative
down-sampling correction, as the Predictor applies them), reports predicted/observed ratio
and ECE before and after per output (on the validation split and, when present, on the
held-out test split), and stores it in the artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from adrank.data.feature_map import FeatureMap
from adrank.metrics import calibration as calibration_summary
from adrank.tasks import derive_probabilities

logger = logging.getLogger(__name__)

CALIBRATION_FORMAT_VERSION = 2
#: calibration files of these versions load (v1: one map per label column)
READABLE_CALIBRATION_VERSIONS = (1, 2)
CalibrationMethod = Literal["isotonic", "platt"]
#: an isotonic map fitted on fewer rows than this of either class gets a warning
FEW_CLASS_ROWS = 50
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


def _names(calibration: dict[str, Any]) -> list[str]:
    """The names the maps are keyed by (outputs; label columns in format v1)."""
    return list(calibration.get("outputs") or calibration.get("labels") or [])


def _apply_clipped(method: str, params: dict[str, Any], p: np.ndarray) -> np.ndarray:
    """Outputs are clipped to ``[OUTPUT_EPS, 1 - OUTPUT_EPS]``: an isotonic block of only
    negatives (or only positives) in the validation split must not become a certain outcome,
    which would make an ad ineligible (q = 0) or priced as a sure click."""
    return np.clip(_apply_one(method, params, p), OUTPUT_EPS, 1.0 - OUTPUT_EPS)


def apply_calibration(calibration: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    """Apply a stored calibration to probabilities (N,) or (N, T), one column per map name
    (``outputs``, or ``labels`` in format v1), clipped as :func:`calibrate_outputs`."""
    method = calibration["method"]
    names = _names(calibration)
    maps = calibration["maps"]
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if len(names) != 1:
            raise ValueError(f"calibration has {len(names)} outputs but probs are 1-D")
        return _apply_clipped(method, maps[names[0]], p)
    if p.shape[1] != len(names):
        raise ValueError(f"calibration has outputs {names}, probs have {p.shape[1]} columns")
    columns = [_apply_clipped(method, maps[name], p[:, i]) for i, name in enumerate(names)]
    return np.stack(columns, axis=1)


def calibrate_outputs(
    calibration: dict[str, Any], probs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Output name -> probabilities (N,), with each output that has a map calibrated
    (others unchanged). ``calibration`` is keyed by output (see :func:`output_calibration`)."""
    method = calibration["method"]
    maps = calibration["maps"]
    return {
        name: _apply_clipped(method, maps[name], p) if name in maps else p
        for name, p in probs.items()
    }


def output_calibration(
    calibration: dict[str, Any], outputs: list[str], feature_map: FeatureMap
) -> dict[str, Any]:
    """A stored calibration keyed by output name: format 2 as is; format 1 (keyed by label
    column) through the tasks' outputs, or as the map of the single output."""
    if calibration.get("version", CALIBRATION_FORMAT_VERSION) >= 2:
        unknown = sorted(set(calibration["maps"]) - set(outputs))
        if unknown:
            raise ValueError(
                f"calibration has maps for {unknown}, which this model does not emit "
                f"(outputs {outputs}); re-run `adrank calibrate`"
            )
        return calibration
    labels = list(calibration.get("labels") or [])
    if len(labels) == 1 and len(outputs) == 1:
        maps = {outputs[0]: calibration["maps"][labels[0]]}
    else:
        by_label = {t.label: t.output for t in feature_map.tasks}
        maps = {
            by_label[label]: calibration["maps"][label]
            for label in labels
            if by_label.get(label) in outputs
        }
    return {
        **calibration,
        "version": CALIBRATION_FORMAT_VERSION,
        "outputs": list(maps),
        "maps": maps,
    }


def fit_calibration(
    probs: np.ndarray, labels: np.ndarray, names: list[str], method: str = "isotonic"
) -> dict[str, Any]:
    """Fit one map per column. ``probs``/``labels``: (N,) or (N, T), columns named by
    ``names`` (output names). Use :func:`fit_output_calibration` for outputs defined on
    different rows."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    if p.shape[1] != len(names) or y.shape != p.shape:
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match outputs {names}")
    return fit_output_calibration(
        {name: (p[:, i], y[:, i]) for i, name in enumerate(names)}, method
    )


def fit_output_calibration(
    data: Mapping[str, tuple[np.ndarray, np.ndarray]], method: str = "isotonic"
) -> dict[str, Any]:
    """Fit one map per output from ``{output: (probs (n,), labels (n,))}`` (each output on
    its own rows)."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    fit = fit_isotonic if method == "isotonic" else fit_platt
    maps = {}
    for name, (p, y) in data.items():
        if len(p) == 0:
            raise ValueError(f"cannot calibrate {name!r}: it has no rows to fit on")
        positives = int((np.asarray(y) == 1).sum())
        if positives in (0, len(y)):  # the map would send every prediction to that class
            raise ValueError(
                f"cannot calibrate {name!r}: all {len(y)} rows it is fitted on are "
                f"{'positive' if positives else 'negative'}; a calibration map needs both "
                "classes (it would map every prediction to "
                f"{1 if positives else 0})"
            )
        if method == "isotonic" and min(positives, len(y) - positives) < FEW_CLASS_ROWS:
            logger.warning(
                "isotonic calibration of %r is fitted on %d rows (%d positive): with this "
                "few, its map is a step function of few steps that sends whole ranges of "
                "predictions to one rate, or to ~0 below its lowest positive; platt "
                "(2 parameters) is steadier on small data",
                name,
                len(y),
                positives,
            )
        maps[name] = fit(p, y)
    return {
        "version": CALIBRATION_FORMAT_VERSION,
        "method": method,
        "outputs": list(maps),
        "maps": maps,
        "fitted_rows": {name: len(p) for name, (p, _) in data.items()},
    }


# ------------------------------------------------------------------------- run dir ---
@dataclass
class CalibrationReport:
    """Before/after calibration on each evaluated split and output: ``{key: {"before": ...,
    "after": ...}}`` where each side holds ``ratio`` (mean predicted / observed), ``ece``,
    ``mean_pred``, ``mean_obs`` and ``rows``. The key is the split (``valid``, ``test``) for a
    single-output run, else ``split/output`` (``valid/pcvr``). ``derived`` lists the reported
    outputs that have no map of their own (derived from calibrated ones)."""

    run_dir: Path
    method: str
    rows: int
    splits: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)
    fitted_rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "splits": self.splits,
            "derived": self.derived,
            "fitted_rows": self.fitted_rows,
        }


def _summary(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    if len(y) == 0:
        nan = float("nan")
        return {"ratio": nan, "ece": nan, "mean_pred": nan, "mean_obs": nan, "rows": 0.0}
    s = calibration_summary(y, p, n_bins=n_bins)
    out = {k: float(s[k]) for k in ("ratio", "ece", "mean_pred", "mean_obs")}
    return out | {"rows": float(len(y))}


def _split_predictions(art: Any, prepared: Any, split: str, outputs: list[str]) -> Any:
    from adrank.artifact import load_split
    from adrank.train.evaluation import as_eval_loader, collect_predictions
    from adrank.train.sampling import correct_predictions

    if split not in prepared.splits:
        return None
    data = load_split(prepared, split)
    # The raw model (never an earlier calibration) is what the new map is fitted on, after
    # the down-sampling correction the Predictor applies before calibrating.
    loader = as_eval_loader(data, art.config.train.eval_batch_size)
    predictions = collect_predictions(art.model, loader, outputs=outputs)
    return correct_predictions(predictions, art.config.train.negative_sampling_rate)


def _targets(
    feature_map: FeatureMap, labels: np.ndarray, names: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Output -> (rows where it is defined (bool (N,)), its 0/1 target (N,)) for the binary
    outputs in ``names`` that this dataset has labels for."""
    from adrank.tasks import TaskError, output_objective

    out = {}
    for name in names:
        try:
            objective = output_objective(feature_map, name)
        except TaskError:
            continue  # e.g. a derived output with no label in this dataset
        if objective.type != "binary":
            continue
        y = objective.target(torch.from_numpy(np.asarray(labels))).numpy()
        rows = np.ones(len(y), dtype=bool)
        if objective.mask is not None:
            rows = labels[:, objective.mask] == 1
        out[name] = (rows, y)
    return out


def calibrate(
    run_dir: str | Path,
    method: str = "isotonic",
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    n_bins: int = 10,
    prepared_dir: str | Path | None = None,
) -> CalibrationReport:
    """Fit ``method`` on the run's validation split, one map per emitted output (see the
    module docstring), store it as ``calibration.json`` (the manifest is rewritten
    atomically) and return the before/after report."""
    from adrank.artifact import load_artifact, open_prepared_data, save_calibration
    from adrank.serve.predictor import run_outputs

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    art = load_artifact(run_dir)
    fm = art.feature_map
    outputs = run_outputs(art)
    prepared = open_prepared_data(
        art, data_dir=data_dir, cache_dir=cache_dir, prepared=prepared_dir
    )
    valid = _split_predictions(art, prepared, "valid", outputs)
    if valid is None:
        raise ValueError(f"{run_dir}: the prepared data has no 'valid' split to calibrate on")
    raw = valid.by_output()
    targets = _targets(fm, valid.labels, list(raw))
    fitted = [o for o in outputs if o in targets]
    if not fitted:
        raise ValueError(
            f"{run_dir}: none of the model's outputs {outputs} has a binary label in this "
            f"dataset (tasks {[t.name for t in fm.tasks]}) to calibrate against"
        )
    cal = fit_output_calibration(
        {o: (raw[o][targets[o][0]], targets[o][1][targets[o][0]]) for o in fitted}, method
    )
    report = CalibrationReport(
        Path(run_dir),
        method,
        len(valid.probs),
        derived=[o for o in targets if o not in outputs],
        fitted_rows=dict(cal["fitted_rows"]),
    )
    evaluated = {"valid": valid}
    test = _split_predictions(art, prepared, "test", outputs)
    if test is not None:
        evaluated["test"] = test
    single = len(targets) == 1
    for split, preds in evaluated.items():
        before = preds.by_output()
        after = derive_probabilities(calibrate_outputs(cal, {o: before[o] for o in outputs}))
        for name, (rows, y) in _targets(fm, preds.labels, list(before)).items():
            report.splits[split if single else f"{split}/{name}"] = {
                "before": _summary(y[rows], before[name][rows], n_bins),
                "after": _summary(y[rows], after[name][rows], n_bins),
            }
    cal.update(
        {
            "derived": report.derived,
            "fitted_on": "valid",
            "rows": report.rows,
            "report": report.splits,
        }
    )
    save_calibration(run_dir, cal)
    logger.info("stored %s calibration of %s in %s", method, fitted, run_dir)
    return report
