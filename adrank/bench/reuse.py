"""When a recorded benchmark row may be reused instead of re-trained.

``adrank benchmark`` resumes: a (model, seed) already in ``runs.jsonl`` is not trained
again. That is only right when the row was trained on the same dataset with the same
config. Rows record both (:attr:`BenchmarkRun.dataset`, :attr:`BenchmarkRun.config_digest`),
and a benchmark that asks for something else is refused with the reason, instead of
publishing the old row under the new settings. Rows recorded before those fields existed
are checked by their ``--set`` overrides only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrank.config import ConfigError, RunConfig, TrainConfig

if TYPE_CHECKING:
    from adrank.bench.runner import BenchmarkRun

#: train settings left out of the digest: console output, and the device (``auto`` is
#: resolved to the machine's before a run saves its config; the row's machine names it)
_NOT_LEARNING = ("progress", "device")


class RecordedRunConflict(ValueError):
    """A recorded row (or finished run directory) was trained otherwise than asked."""


def config_digest(cfg: RunConfig) -> str:
    """A short digest of what a run learns from: the model, the dataset, its params and the
    train settings that differ from :class:`TrainConfig`'s defaults (so a new setting added
    with a default does not change the digest of older configs). ``notes`` and console
    settings do not count."""
    defaults = dataclasses.asdict(TrainConfig())
    train = {
        k: v
        for k, v in dataclasses.asdict(cfg.train).items()
        if k not in _NOT_LEARNING and v != defaults.get(k)
    }
    data = {
        "model": cfg.model.lower(),
        "dataset": cfg.dataset,
        "params": cfg.params,
        "train": train,
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_dataset(rows: Iterable[BenchmarkRun], dataset: str, results: Path) -> None:
    """Refuse a benchmark of ``dataset`` into a folder whose rows are of another dataset."""
    others = sorted({r.dataset for r in rows if r.dataset and r.dataset != dataset})
    if others:
        raise RecordedRunConflict(
            f"{results} holds runs of dataset {', '.join(others)}, not {dataset}: a benchmark "
            "folder holds one dataset; give another --output"
        )


def check_row(row: BenchmarkRun, digest: str, overrides: list[str], results: Path) -> None:
    """Refuse to reuse ``row`` when it was trained with another config than ``digest`` (or,
    for a row without a digest, other ``--set`` overrides)."""
    what = f"{results} records {row.model} seed {row.seed}"
    if row.config_digest and row.config_digest != digest:
        raise RecordedRunConflict(
            f"{what} trained with another config (overrides {row.overrides or 'none'}, "
            f"config digest {row.config_digest}) than this benchmark asks for (overrides "
            f"{overrides or 'none'}, digest {digest}): the shipped config, --set or the "
            "defaults differ. Give another --output to train the new config"
        )
    if not row.config_digest and list(row.overrides) != list(overrides):
        raise RecordedRunConflict(
            f"{what} with overrides {row.overrides or 'none'}, but this benchmark asks for "
            f"{overrides or 'none'}: give another --output to train with them"
        )


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to take over a finished (or interrupted) run directory whose recorded config
    is not ``cfg`` (its ``config.yaml``; nothing to check when it has none)."""
    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        return
    try:
        theirs = RunConfig.load(recorded)
    except ConfigError as exc:
        raise RecordedRunConflict(f"{recorded} cannot be read ({exc}); move {run_dir}") from exc
    theirs.dataset = theirs.dataset or cfg.dataset
    if config_digest(theirs) != config_digest(cfg):
        raise RecordedRunConflict(
            f"{run_dir} was trained with another config ({recorded}) than this benchmark "
            f"asks for: {_difference(theirs, cfg)}. Move it away or give another --output"
        )


def _difference(old: RunConfig, new: RunConfig) -> str:
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys[:5]]
    return "; ".join(shown) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def _flat(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"model": cfg.model.lower(), "dataset": cfg.dataset}
    out |= {f"params.{k}": v for k, v in cfg.params.items()}
    train = dataclasses.asdict(cfg.train)
    out |= {f"train.{k}": v for k, v in train.items() if k not in _NOT_LEARNING}
    return out
