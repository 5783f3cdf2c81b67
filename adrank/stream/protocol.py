"""The streaming protocol: train on chunk t, score chunk t+1 before seeing it.

1. A dataset's rows (all splits) are put in event-time order (its ``time`` role; ties keep
   the order of the splits train, valid, test) and cut into ``chunks`` of equal rows, or
   into periods of ``period_s`` seconds (:func:`cut_chunks`).
2. The processor is fitted on chunk 0; before each later chunk is trained on, the
   vocabularies grow with it (:class:`~adrank.stream.vocab.VocabularyGrowth`). Chunk t+1 is
   encoded with the vocabularies as they were after chunk t: its new ids are OOV.
3. For t = 0 .. T-2 the strategy (:mod:`adrank.stream.strategies`) updates on chunk t
   (and, depending on the strategy, on earlier ones); every update holds out the **last
   10 % of chunk t, by time**, for early stopping (patience from the training config), with
   at most ``max_epochs`` epochs (default **5**) per update. Then chunk t+1 is scored.
4. Per evaluated chunk: AUC, logloss, pred/obs (``calibration_ratio``), the warm/cold
   slices (a row is warm when its ``cold_by`` value, by default the group role's column,
   e.g. the user, occurs in chunks 0..t), **compute** (training rows x epochs of the
   update) and the update's wall time with the load average.

The trainer is the one :class:`~adrank.train.trainer.Trainer`; the optimizer is Adam with
per-row step counts for the tables (:class:`~adrank.stream.growing.GrowingModel`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from adrank.config import TrainConfig, monitor_direction
from adrank.data.batches import TensorData, table_to_batch
from adrank.data.feature_map import FeatureMap
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema
from adrank.stream.growing import GrowingModel
from adrank.stream.vocab import GrowthStep, VocabularyGrowth
from adrank.tasks import model_outputs
from adrank.train.evaluation import Predictions, as_eval_loader, collect_predictions
from adrank.train.trainer import Trainer

logger = logging.getLogger(__name__)

__all__ = [
    "StreamContext",
    "StreamSettings",
    "check_chunks",
    "cut_chunks",
    "load_stream",
    "update_stats",
]


@dataclass(frozen=True)
class StreamSettings:
    """How a stream is cut and updated (see the module docstring).

    ``chunks``: equal-row chunks (ignored when ``period_s`` is set); ``holdout``: the last
    fraction of each update's chunk, by time, used for early stopping; ``max_epochs``: the
    epoch cap per update; ``cold_by``: the raw column of the warm/cold slices (default: the
    group role's column); ``min_count``/``evict_after``/``headroom``: vocabulary growth.
    """

    chunks: int = 20
    period_s: float | None = None
    holdout: float = 0.1
    max_epochs: int = 5
    cold_by: str | None = None
    min_count: int | None = None
    evict_after: int | None = None
    headroom: float = 0.5

    def __post_init__(self) -> None:
        if self.period_s is None and self.chunks < 2:
            raise ValueError(f"a stream needs at least 2 chunks, got chunks={self.chunks}")
        if self.period_s is not None and self.period_s <= 0:
            raise ValueError(f"period_s must be > 0 seconds, got {self.period_s}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")


def time_column(schema: Schema) -> str:
    """The raw column of the schema's ``time`` role (or a clear error)."""
    column = schema.roles.get("time")
    if not isinstance(column, str):
        raise ValueError(
            f"{'the schema' if schema.name in ('', 'dataset') else repr(schema.name)} declares "
            "no 'time' role: a stream needs event times to order its rows (declare roles: "
            "{time: COLUMN} in the schema)"
        )
    return column


def load_stream(dataset: str, data_dir: str | Path | None = None) -> tuple[Schema, pl.DataFrame]:
    """All rows of ``dataset`` (every split) in event-time order, and its schema."""
    from adrank.data.datasets import ensure_files, get_dataset, resolve_data_dir

    builder = get_dataset(dataset)
    root = resolve_data_dir(data_dir)
    ensure_files(builder, root)
    schema = builder.schema()
    column = time_column(schema)
    splits = builder.build_splits(root, seed=builder.default_seed)
    frame = pl.concat([splits[s] for s in ("train", "valid", "test") if s in splits])
    return schema, frame.sort(column, maintain_order=True)


def load_stream_files(
    schema: Schema, paths: list[Path] | tuple[Path, ...], *, bad_rows: str = "error"
) -> pl.DataFrame:
    """All rows of raw log files (CSV/TSV/Parquet/JSON lines), read and checked with
    ``schema`` as ``adrank prepare`` reads them, in event-time order of its ``time`` role."""
    from adrank.data.readers import read_raw

    if not paths:
        raise ValueError("no input files: give at least one --input FILE")
    column = time_column(schema)
    frames = [read_raw(Path(p), schema=schema, bad_rows=bad_rows).frame for p in paths]  # type: ignore[arg-type]
    frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    return frame.sort(column, maintain_order=True)


def cut_chunks(
    frame: pl.DataFrame, time: str, chunks: int = 20, period_s: float | None = None
) -> list[pl.DataFrame]:
    """Cut a time-ordered ``frame`` into ``chunks`` of equal rows (the first ones one row
    longer when it does not divide), or into consecutive periods of ``period_s`` seconds of
    the ``time`` column (empty periods are skipped)."""
    if time not in frame.columns:
        raise KeyError(f"time column {time!r} is not in the data: {frame.columns}")
    values = frame.get_column(time)
    if values.null_count():
        raise ValueError(f"time column {time!r} has {values.null_count()} missing values")
    if not values.is_sorted():
        raise ValueError(f"the rows are not in {time!r} order; sort them first (load_stream)")
    if period_s is None:
        if frame.height < chunks:
            raise ValueError(f"{frame.height} rows cannot make {chunks} chunks")
        bounds = np.linspace(0, frame.height, chunks + 1).round().astype(int)
        return [frame.slice(a, b - a) for a, b in itertools.pairwise(bounds.tolist())]
    seconds = values.cast(pl.Float64).to_numpy()
    period = np.floor((seconds - seconds[0]) / period_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, period[1:] != period[:-1]])
    ends = np.r_[starts[1:], len(period)]
    return [frame.slice(int(a), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass
class UpdateStats:
    """What one update cost: ``compute`` = training rows x epochs; ``epochs``; wall time;
    ``info``: what the strategy decided (members trained, drift detected, ...)."""

    compute: int = 0
    epochs: int = 0
    wall_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def update_stats(stats: list[UpdateStats], **info: Any) -> UpdateStats:
    """The sum of several fits (an ensemble's members), with ``info``."""
    return UpdateStats(
        sum(s.compute for s in stats),
        sum(s.epochs for s in stats),
        sum(s.wall_s for s in stats),
        info,
    )


def check_chunks(chunks: list[pl.DataFrame], time: str | None) -> None:
    """Refuse chunks the protocol cannot run on, before any training: fewer than 2, an
    updated chunk (all but the last) with fewer than 2 rows (its update needs a training row
    and a holdout row), an empty last chunk, and, given the ``time`` column, chunks that are
    not in time order (within each, and each starting no earlier than the one before ends)."""
    if len(chunks) < 2:
        raise ValueError(f"the stream has {len(chunks)} chunk(s); it needs at least 2")
    for t, chunk in enumerate(chunks):
        least = 1 if t == len(chunks) - 1 else 2
        if chunk.height < least:
            raise ValueError(
                f"chunk {t} has {chunk.height} row(s); "
                + ("the last chunk is scored and needs at least 1" if least == 1 else
                   "an updated chunk needs at least 2 (training rows and a holdout)")
            )  # fmt: skip
    if time is None or any(time not in c.columns for c in chunks):
        return
    previous_end = None
    for t, chunk in enumerate(chunks):
        values = chunk.get_column(time)
        if values.null_count():
            raise ValueError(f"chunk {t}: time column {time!r} has missing values")
        if not values.is_sorted():
            raise ValueError(f"chunk {t} is not in {time!r} order; sort the rows first")
        if previous_end is not None and values[0] < previous_end:
            raise ValueError(
                f"chunk {t} starts at {time}={values[0]!r}, before chunk {t - 1} ends "
                f"({previous_end!r}): the chunks are not in time order"
            )
        previous_end = values[-1]


class StreamContext:
    """The stream as a strategy sees it: the chunks, the growing processor, encoding,
    building models and fitting them with the one Trainer.

    Args:
        schema: the dataset schema; chunks: raw chunks in time order.
        model_name, params: the registry model and its hyperparameters.
        train_config: training settings (``max_epochs`` is replaced by the stream's cap,
            ``seed`` per update).
        settings: the stream settings; seed: the run's seed.
    """

    def __init__(
        self,
        schema: Schema,
        chunks: list[pl.DataFrame],
        model_name: str,
        params: dict[str, Any],
        train_config: TrainConfig,
        settings: StreamSettings,
        seed: int,
    ) -> None:
        self.schema = schema
        self.chunks = chunks
        self.model_name = model_name
        self.params = dict(params)
        self.settings = settings
        self.seed = seed
        self.train_config = dataclasses.replace(
            train_config, max_epochs=settings.max_epochs, seed=seed
        )
        self.processor = FeatureProcessor(schema).fit(chunks[0])
        self.growth = VocabularyGrowth(
            settings.min_count, settings.evict_after, settings.headroom
        ).start(self.processor, chunks[0], chunk=0)
        self.step = GrowthStep()
        self.t = 0

    def advance(self, t: int) -> GrowthStep:
        """Chunk ``t`` arrives: grow the vocabularies with it (chunk 0 fitted them)."""
        self.t = t
        self.step = (
            GrowthStep() if t == 0 else self.growth.observe(self.processor, self.chunks[t], t)
        )
        return self.step

    # ------------------------------------------------------------------ data ------
    @property
    def feature_map(self) -> FeatureMap:
        """The processor's feature map now (vocabulary sizes, not capacity)."""
        return self.processor.feature_map()

    def encode(self, frame: pl.DataFrame) -> TensorData:
        """``frame`` (raw rows) encoded with the current vocabularies."""
        encoded = self.processor.transform(frame)
        return TensorData(table_to_batch(encoded.to_arrow(), self.feature_map))

    def split(self, t: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Chunk ``t`` without and with only its last ``holdout`` fraction (by time)."""
        chunk = self.chunks[t]
        valid = max(1, round(chunk.height * self.settings.holdout))
        return chunk.head(chunk.height - valid), chunk.tail(valid)

    def training_data(
        self, first: int, t: int, replay: float = 0.0
    ) -> tuple[TensorData, TensorData]:
        """Chunks ``first .. t-1`` plus chunk t's head for training, chunk t's tail for
        early stopping (both encoded now). ``replay`` appends, after those rows, a uniform
        sample (without replacement, seeded) of ``replay`` x the head's rows from the
        chunks before ``first``."""
        head, tail = self.split(t)
        train = pl.concat([*self.chunks[first:t], head]) if t > first else head
        if replay > 0 and first > 0:
            past = pl.concat(self.chunks[:first])
            n = min(past.height, round(replay * head.height))
            rng = np.random.default_rng([self.seed, t, 31_337])
            rows = np.sort(rng.choice(past.height, size=n, replace=False))
            train = pl.concat([train, past[rows]])
        return self.encode(train), self.encode(tail)

    # ----------------------------------------------------------------- models ------
    def new_model(self, seed: int) -> GrowingModel:
        """A freshly initialised model with tables of the current capacity."""
        return GrowingModel(
            self.model_name,
            self.params,
            self.feature_map,
            self.growth.capacity(),
            self.train_config.learning_rate,
            seed=seed,
        )

    def follow(self, grown: GrowingModel) -> None:
        """Let a kept model follow this chunk's vocabulary growth."""
        grown.apply(self.step, self.feature_map, self.growth.capacity())

    def fit(
        self,
        grown: GrowingModel,
        train: TensorData,
        valid: TensorData,
        *,
        model: torch.nn.Module | None = None,
        **overrides: Any,
    ) -> UpdateStats:
        """Train ``grown`` (or ``model``, a wrapper around ``grown.model`` whose trainable
        parameters are its) with the Trainer and ``grown``'s optimizer; returns the cost.
        ``overrides`` replace training settings (e.g. ``max_epochs``)."""
        start = time.perf_counter()
        monitor = overrides.get("monitor", self.train_config.monitor)
        if monitor_direction(monitor) and self._one_class(valid):
            # AUC is undefined on one class (the trainer stops on a NaN metric): a small or
            # quiet chunk's holdout can hold no click, so this update stops on its logloss
            logger.warning(
                "chunk %d: the early-stopping holdout (%d rows) holds one class; this update "
                "monitors logloss instead of %s", self.t, len(valid), monitor,
            )  # fmt: skip
            overrides["monitor"] = "logloss"
        config = dataclasses.replace(self.train_config, seed=self.seed + 7919 * self.t, **overrides)
        for group in grown.optimizer.param_groups:  # a fresh LR schedule per update
            group["lr"] = config.learning_rate
        trainer = Trainer(model if model is not None else grown.model, config)  # type: ignore[arg-type]
        trainer.optimizer = grown.optimizer  # type: ignore[assignment]
        result = trainer.fit(train, valid)
        rows = sum(int(h["train_samples"]) for h in result.history)
        return UpdateStats(rows, result.epochs_run, time.perf_counter() - start)

    def _one_class(self, data: TensorData) -> bool:
        """Whether the trained task's labels in ``data`` hold a single value."""
        labels = data.data.labels[:, self.label_index]
        return bool(len(labels)) and bool((labels == labels[0]).all())

    def predict(self, model: torch.nn.Module, data: TensorData) -> Predictions:
        """``model``'s predictions on ``data`` (eval mode)."""
        outputs = model_outputs(model, model.feature_map, self.train_config.task)  # type: ignore[arg-type]
        loader = as_eval_loader(data, self.train_config.eval_batch_size)
        return collect_predictions(
            model, loader, torch.device(self.train_config.device), outputs=outputs
        )

    @property
    def label_index(self) -> int:
        """The label column of the trained task (``train_config.task``, else the first)."""
        fm = self.feature_map
        task = next((x for x in fm.tasks if x.name == self.train_config.task), fm.tasks[0])
        return fm.label_index(task.label)

    def logloss(self, model: torch.nn.Module, data: TensorData) -> float:
        """``model``'s logloss on ``data`` (the trained task's label)."""
        from adrank.metrics import logloss

        predictions = self.predict(model, data)
        probs = predictions.probs if predictions.probs.ndim == 1 else predictions.probs[:, 0]
        return float(logloss(predictions.labels[:, self.label_index], probs))

    def warm_flags(self, t: int) -> np.ndarray:
        """(N,) ``"warm"``/``"cold"`` for the rows of chunk ``t + 1``: whether their
        ``cold_by`` value occurs in chunks 0..t."""
        column = self.settings.cold_by or self.schema.roles.get("group")
        if not isinstance(column, str):
            raise ValueError("no cold_by column given and the schema has no group role")
        seen = pl.concat([c.select(column) for c in self.chunks[: t + 1]]).get_column(column)
        rows = self.chunks[t + 1].get_column(column)
        return np.where(rows.is_in(seen.unique().implode()).to_numpy(), "warm", "cold")

    @staticmethod
    def load_average() -> float | None:
        return _load_average()
