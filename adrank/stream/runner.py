"""Run one strategy over a stream (:func:`run_stream`) and write per-chunk run directories.

Layout of ``out`` (with ``save="all"``; ``"last"`` keeps only the last chunk's run)::

    out/                       an adrank "stream" output
      records.jsonl            one line per evaluated chunk (see :func:`run_stream`)
      chunk_000/               the model after updating on chunk 0: a complete run
      chunk_001/ ...           directory (manifest, config, processor, feature_map,
                               model.pt, metrics.json) plus growth.json and optimizer.pt,
                               so `adrank publish`, `adrank serve` and
                               `adrank train --init-from` take it as it is
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch

from adrank.config import RunConfig, TrainConfig
from adrank.data.schema import Schema
from adrank.outputs import OutputDirError, claim_dir, release_dir
from adrank.stream.protocol import StreamContext, StreamSettings, check_chunks
from adrank.stream.strategies import build_strategy
from adrank.stream.warm_start import GROWTH_FILE, OPTIMIZER_FILE
from adrank.train.evaluation import Predictions, slice_metrics
from adrank.utils import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["SAVE_CHOICES", "run_stream"]

SAVE_CHOICES = ("none", "last", "all")
_METRICS = ("auc", "logloss", "calibration_ratio", "gauc")


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def run_stream(
    schema: Schema,
    chunks: list[pl.DataFrame],
    model_name: str,
    params: dict[str, Any],
    train_config: TrainConfig,
    strategy: str,
    options: dict[str, Any] | None,
    settings: StreamSettings,
    seed: int,
    *,
    dataset: str = "",
    out: str | Path | None = None,
    save: str = "last",
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_predictions: Callable[[int, Predictions], None] | None = None,
) -> list[dict[str, Any]]:
    """Update ``strategy`` on chunks 0..T-2 and score each next chunk; returns one record per
    evaluated chunk: ``chunk`` (the scored one), ``auc``, ``logloss``,
    ``calibration_ratio`` (pred/obs), ``gauc``, ``warm_*``/``cold_*`` (the same on the
    slices, with ``rows``), ``compute`` (rows x epochs of the update), ``epochs``,
    ``update_wall_s``, ``load_average``, ``admitted``/``evicted`` ids and the table rows.
    ``on_predictions(chunk, predictions)`` sees every scored chunk's per-row predictions."""
    if save not in SAVE_CHOICES:
        raise ValueError(f"save must be one of {SAVE_CHOICES}, got {save!r}")
    check_chunks(
        chunks, schema.roles.get("time") if isinstance(schema.roles.get("time"), str) else None
    )
    root = None if out is None else _claim_stream_dir(Path(out))
    try:  # held until the stream ends: a second stream into it is refused at once
        torch.manual_seed(seed)
        ctx = StreamContext(schema, chunks, model_name, params, train_config, settings, seed)
        runner = build_strategy(strategy, options)
        records: list[dict[str, Any]] = []
        last = len(chunks) - 2
        for t in range(last + 1):
            step = ctx.advance(t)
            load = ctx.load_average()
            start = time.perf_counter()
            stats = runner.update(ctx, t)
            wall = time.perf_counter() - start
            predictions = runner.predict(ctx, ctx.encode(chunks[t + 1]))
            if on_predictions is not None:  # per-row scores of chunk t + 1 (drift detectors)
                on_predictions(t + 1, predictions)
            slices = slice_metrics(predictions, ctx.feature_map, by=ctx.warm_flags(t))
            record: dict[str, Any] = {
                "dataset": dataset,
                "model": model_name,
                "strategy": strategy,
                "options": runner.settings(),
                "seed": seed,
                "chunk": t + 1,
                "rows": chunks[t + 1].height,
            }
            record |= {k: slices["all"].get(k) for k in _METRICS if k in slices["all"]}
            for part in ("warm", "cold"):
                metrics = slices.get(part, {})
                record[f"{part}_rows"] = int(metrics.get("rows", 0))
                for key in ("auc", "logloss"):
                    record[f"{part}_{key}"] = metrics.get(key)
            record |= {
                "compute": stats.compute,
                "epochs": stats.epochs,
                "update_wall_s": wall,
                "load_average": load,
                "cpus": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "admitted": step.num_admitted,
                "evicted": step.num_evicted,
                "table_rows": runner.current().rows(),
                "strategy_info": stats.info,
            }
            record = {k: _round(v) for k, v in record.items()}
            records.append(record)
            logger.info(
                "%s %s seed %d: chunk %d AUC %.4f compute %d",
                model_name, strategy, seed, t + 1, record.get("auc") or float("nan"), stats.compute,
            )  # fmt: skip
            if root is not None:
                with open(root / "records.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if save == "all" or (save == "last" and t == last):
                    # no dataset name: its prepared splits are encoded by another processor, so
                    # `adrank evaluate` must not re-score the run on them (the name is in the
                    # manifest's "stream" entry)
                    config = RunConfig(
                        model=model_name, dataset="", params=params, train=ctx.train_config
                    )
                    write_chunk_run(
                        root / f"chunk_{t:03d}", ctx, runner.current(), config, record,
                        servable=runner.scores_as_saved,
                    )  # fmt: skip
            if on_record is not None:
                on_record(record)
        return records
    finally:
        if root is not None:
            release_dir(root)


def _claim_stream_dir(out: Path) -> Path:
    """``out`` as an adrank stream output that holds no earlier stream's results: a stream is
    not resumed, and appending to another run's records would mix two streams."""
    root = claim_dir(out, "stream", hold=True)
    earlier = sorted(
        p.name for p in root.iterdir() if p.name == "records.jsonl" or p.name.startswith("chunk_")
    )
    if earlier:
        release_dir(root)
        raise OutputDirError(
            f"{root} already holds the results of a stream ({', '.join(earlier[:4])}"
            f"{', ...' if len(earlier) > 4 else ''}); a stream is not resumed and adrank does "
            "not delete them: choose a new output directory"
        )
    return root


def write_chunk_run(
    run_dir: Path,
    ctx: StreamContext,
    grown: Any,
    config: RunConfig,
    record: dict[str, Any],
    servable: bool = True,
) -> Path:
    """A complete run directory of the model after an update (see the module docstring).
    ``servable`` False (a strategy whose scores need more than this model) is recorded in
    the manifest, and :class:`~adrank.serve.predictor.Predictor` then refuses the run."""
    from adrank.artifact import write_artifact

    run_dir = claim_dir(run_dir, "run")
    ctx.processor.save(run_dir / "processor")
    write_artifact(
        run_dir,
        config=config,
        processor_dir=run_dir / "processor",
        feature_map=grown.feature_map,
        model=grown.model,
        metrics={"stream": record, "test": None, "valid": None},
        extra={
            "stream": {
                "dataset": record["dataset"],
                "chunk": ctx.t,
                "strategy": record["strategy"],
                "seed": record["seed"],
                "servable": servable,
            }
        },
    )
    ctx.growth.save(run_dir / GROWTH_FILE)
    state = grown.optimizer.state_dict()
    atomic_write(run_dir / OPTIMIZER_FILE, lambda p: torch.save({"optimizer": state}, p))
    return run_dir
