"""Helpers shared by the stand-alone training scripts (no adrank imports).

Spec (JSON file given as the only argument)::

    {"model": "deepfm", "params": {...adrank hyperparameters...}, "data": "frappe.npz",
     "epochs": 3, "batch_size": 4096, "learning_rate": 0.001,
     "embedding_regularizer": 0.05, "grad_clip_norm": 10.0, "seed": 2021,
     "threads": 2, "repeats": 3, "converge": false, "patience": 2}

With ``"converge": true`` each run follows the BARS protocol instead of a fixed ``epochs``:
validation AUC after every epoch, LR x 0.1 after each epoch that does not improve it (floor
1e-6), stop after ``patience`` such epochs in a row or ``epochs`` epochs, then score the test
split with the best epoch's weights (:func:`fit_epochs`).

Data (``.npz``): ``fields`` (F names), ``vocab_sizes`` (F,), and for each split
``<split>_x`` int64 (N, F) ids and ``<split>_y`` float32 (N,) labels. The sequence peer
(``din_run.py``) reads one ``.npz`` per split instead, written by
``benchmarks/sequence_peer.py`` (layout there), and scores gAUC with :func:`gauc`.

Output: one JSON line ``{"framework", "model", "runs": [{"seed", "epoch_train_s": [...],
"train_rows", "test_auc", "test_logloss", "best_epoch", "valid_auc"}], "versions": {...}}``
on stdout, prefixed with ``RESULT `` so progress output of the peers cannot be mistaken for
it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def load_spec() -> dict[str, Any]:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} SPEC.json")
    with open(sys.argv[1]) as fh:
        return json.load(fh)


def load_data(path: str) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def setup(seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def auc_logloss(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """ROC AUC (rank formula, ties averaged) and logloss, without sklearn."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    pos = y.sum()
    neg = len(y) - pos
    auc = (ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    logloss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    return float(auc), logloss


def bars_init(model: torch.nn.Module) -> None:
    """The initialization BARS/FuxiCTR (and adrank) use, applied to every framework's model so
    that all of them start from the same distribution and their AUCs compare at equal epochs:
    Xavier-normal weights and zero biases for each ``nn.Linear``, normal(0, 1e-4) for each
    ``nn.Embedding``. Other parameters (e.g. DeepCTR's cross-layer kernels, already Xavier)
    keep the library's init. DeepCTR-Torch's own default, normal(0, 1e-4) DNN weights, left
    its DeepFM at test AUC 0.948 after 3 epochs against 0.974 for adrank and the floor."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, std=1e-4)


class ClippedAdam(torch.optim.Adam):
    """Adam that first clips the global gradient norm to ``max_norm`` (``None``: no clipping).

    adrank and the floor clip at ``grad_clip_norm`` (10, FuxiCTR's default) before every
    step; the peers' own loops do not, and without it the floor's DeepFM ends 3 epochs at
    test AUC 0.9633 instead of 0.9716 (seed 2021). Passing this optimizer gives the peers
    the same step."""

    def __init__(self, params: Any, max_norm: float | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.max_norm = max_norm

    def step(self, closure: Any = None) -> Any:
        if self.max_norm:
            grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.max_norm)
        return super().step(closure)


def fit_epochs(
    spec: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    run_epoch: Callable[[], object],
    score_valid: Callable[[], np.ndarray],
    valid_y: np.ndarray,
) -> dict[str, Any]:
    """Train for ``spec["epochs"]`` epochs, or until converged when ``spec["converge"]``.

    ``run_epoch`` trains one epoch (timed; validation scoring is not), ``score_valid``
    returns validation probabilities. Converged mode is adrank's Trainer protocol: after a
    non-improving epoch the LR of every param group is multiplied by 0.1 (not below 1e-6);
    ``patience`` non-improving epochs in a row stop the run; the best epoch's weights are
    restored. Returns ``{"epoch_train_s", "best_epoch", "valid_auc"}`` (epochs from 1).
    """
    converge = bool(spec.get("converge"))
    patience = max(int(spec.get("patience", 2)), 1)
    epoch_s: list[float] = []
    best_auc, best_epoch, bad = -1.0, 0, 0
    best_state: dict[str, Any] | None = None
    for epoch in range(1, spec["epochs"] + 1):
        with Timer() as t:
            run_epoch()
        epoch_s.append(t.seconds)
        if not converge:
            continue
        auc = auc_logloss(valid_y, score_valid())[0]
        if auc > best_auc:
            best_auc, best_epoch, bad = auc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            continue
        bad += 1
        for group in optimizer.param_groups:
            group["lr"] = max(group["lr"] * 0.1, 1e-6)
        if bad >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "epoch_train_s": epoch_s,
        "best_epoch": best_epoch or len(epoch_s),
        "valid_auc": best_auc if converge else None,
    }


def fit_deepctr(
    spec: dict[str, Any],
    model: Any,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    x_valid: dict[str, np.ndarray],
    valid_y: np.ndarray,
    eval_batch_size: int = 65536,
) -> dict[str, Any]:
    """Compile a DeepCTR-Torch model with :class:`ClippedAdam` and train it under
    :func:`fit_epochs`, one ``fit(epochs=1)`` call (its own shuffling loop) per epoch.

    DeepCTR's loss is the batch **sum**, whose gradient is ``batch_size`` x the mean's, so
    the clip norm is ``grad_clip_norm * batch_size``."""
    batch = spec["batch_size"]
    clip = spec.get("grad_clip_norm")
    model.compile(
        ClippedAdam(
            model.parameters(), max_norm=clip * batch if clip else None, lr=spec["learning_rate"]
        ),
        "binary_crossentropy",
        metrics=[],
    )
    return fit_epochs(
        spec,
        model,
        model.optim,
        lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True),
        lambda: model.predict(x_valid, batch_size=eval_batch_size),
        valid_y,
    )


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def emit(framework: str, model: str, runs: list[dict[str, Any]], **extra: Any) -> None:
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for name in ("deepctr_torch", "torch_rechub"):
        mod = sys.modules.get(name)
        if mod is not None:
            versions[name] = getattr(mod, "__version__", "?")
    payload = {
        "framework": framework,
        "model": model,
        "runs": runs,
        "versions": versions,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
        **extra,
    }
    print("RESULT " + json.dumps(payload), flush=True)


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC as adrank defines it (``adrank.metrics.gauc``): the AUC of each group (tied
    scores at their average rank) averaged with weights = the group's rows (impressions),
    over the groups that have both classes."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    order = np.argsort(g, kind="stable")
    bounds = np.flatnonzero(np.diff(g[order])) + 1
    total, weight = 0.0, 0.0
    for rows in np.split(order, bounds):
        positives = y[rows].sum()
        if 0 < positives < len(rows):
            total += auc_logloss(y[rows], p[rows])[0] * len(rows)
            weight += len(rows)
    if weight == 0:
        raise ValueError("gAUC is undefined: no group has both classes")
    return total / weight
