"""``adrank train --init-from RUN_DIR``: continue from a finished run's weights, optimizer
state and processor (:class:`WarmStart`).

* **processor**: the run's fitted processor; its vocabularies grow on the new training
  split (:class:`~adrank.stream.vocab.VocabularyGrowth`, state in the run's
  ``growth.json`` when it has one, so counts of not-yet-admitted values carry over from
  one warm start to the next). New ids get new rows; every existing id keeps its number.
  All splits of the new data are encoded with this processor (numeric statistics and
  bucket boundaries stay those of the first run).
* **weights**: ``model.pt`` (the best epoch) copied into a model whose tables have the new
  capacity; rows of newly admitted ids are freshly initialised.
* **optimizer state**: from the run's ``checkpoint.pt`` (the *last* epoch's state; the run
  kept the best epoch's weights), or a streamed run's ``optimizer.pt``. Dense parameters
  keep their Adam moments and step; the tables move to
  :class:`~adrank.train.row_adam.RowAdam`, each row keeping its moments and its step count
  (a plain-Adam run's step count for every existing row), new rows at step 0. A run
  without either file continues with fresh optimizer state (logged).
  The learning rate is the new config's.

The model and its hyperparameters must be the run's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adrank.artifact import artifact_digest, load_artifact
from adrank.config import RunConfig
from adrank.data.feature_map import FeatureMap
from adrank.data.prepare import PreparedData, default_cache_dir, prepare_frames
from adrank.stream.tables import capacity_feature_map, grow_model, grow_row_state, reset_rows
from adrank.stream.vocab import GrowthStep, VocabularyGrowth
from adrank.train.checkpoint import load_checkpoint
from adrank.train.optim import SparseDenseAdam, build_optimizer
from adrank.train.row_adam import row_state_from_adam

if TYPE_CHECKING:
    import polars as pl

logger = logging.getLogger(__name__)

__all__ = ["GROWTH_FILE", "OPTIMIZER_FILE", "WarmStart"]

#: the growth state a warm-started (or streamed) run keeps next to its processor
GROWTH_FILE = "growth.json"
#: a streamed run's optimizer state (a trained run has it in checkpoint.pt)
OPTIMIZER_FILE = "optimizer.pt"


def _table_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Embedding`` weights, in the order ``enable_sparse_embeddings``
    hands them to the table optimizer."""
    return [
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Embedding) and module.weight.requires_grad
    ]


def optimizer_state_by_name(model: nn.Module, state: dict[str, Any]) -> dict[str, dict]:
    """Per trainable parameter name of ``model``, its optimizer state in ``state`` (a
    ``torch.optim.Adam`` or :class:`SparseDenseAdam` state dict); tables in RowAdam form."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = dict(model.named_parameters())
    tables = _table_names(model)
    if set(state) == {"dense", "sparse"}:
        dense = [n for n in names if n not in tables]
        parts = [
            (dense, (state["dense"] or {}).get("state", {})),
            (tables, state["sparse"]["state"]),
        ]
    else:
        parts = [(names, state.get("state", {}))]
    out: dict[str, dict] = {}
    for param_names, states in parts:
        for index, name in enumerate(param_names):
            st = states.get(index)
            if not st:
                continue
            if name in tables and torch.as_tensor(st["step"]).dim() == 0:
                st = row_state_from_adam(st, shapes[name].shape[0])
            out[name] = st
    return out


class WarmStart:
    """Everything ``--init-from RUN_DIR`` carries into a new run (see the module docstring).

    Args:
        run_dir: a finished run directory.
        min_count, evict_after, headroom: for a run without ``growth.json`` (see
            :class:`~adrank.stream.vocab.VocabularyGrowth`).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        min_count: int | None = None,
        evict_after: int | None = None,
        headroom: float = 0.5,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.artifact = load_artifact(self.run_dir)
        self.processor = self.artifact.processor
        growth_path = self.run_dir / GROWTH_FILE
        if growth_path.exists():
            self.growth = VocabularyGrowth.load(growth_path)
            self.chunk = int(max((s.max() for s in self.growth.last_seen_.values()), default=0))
        else:
            self.growth = VocabularyGrowth(min_count, evict_after, headroom).start(self.processor)
            self.chunk = 0
        self.step = GrowthStep()
        self.optimizer_state: dict[str, dict] = {}
        found = [self.run_dir / n for n in (OPTIMIZER_FILE, "checkpoint.pt")]
        found = [p for p in found if p.exists()]
        if found:
            ckpt = load_checkpoint(found[0])
            self.optimizer_state = optimizer_state_by_name(self.artifact.model, ckpt["optimizer"])
        else:
            logger.warning(
                "%s has no checkpoint.pt: continuing with fresh optimizer state", run_dir
            )
        self._maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prepared: PreparedData | None = None  # set by the pipeline after prepare()

    def check(self, config: RunConfig) -> None:
        """Refuse a config whose model or hyperparameters differ from the run's."""
        old = self.artifact.config
        if config.model.lower() != old.model.lower():
            raise ValueError(
                f"--init-from {self.run_dir} holds a {old.model!r} model, but the config trains "
                f"{config.model!r}; warm starts keep the architecture"
            )
        changed = sorted(
            k
            for k in set(old.params) | set(config.params)
            if old.params.get(k) != config.params.get(k)
        )
        if changed:
            runs = ", ".join(f"{k}={old.params.get(k, '(the default)')}" for k in changed)
            raise ValueError(
                f"--init-from {self.run_dir}: model params {changed} differ from the run's "
                f"({runs}); warm starts keep the architecture"
            )

    def prepare(
        self,
        dataset: str,
        *,
        data_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> PreparedData:
        """Build ``dataset``'s splits, grow the vocabularies on its training split and encode
        every split with the grown processor (written under the prepared-data cache)."""
        from adrank.data.datasets import ensure_files, get_dataset, resolve_data_dir

        builder = get_dataset(dataset)
        root = resolve_data_dir(data_dir)
        ensure_files(builder, root)
        splits = builder.build_splits(root, seed=builder.default_seed)
        return self.prepare_splits(splits, dataset, cache_dir=cache_dir)

    def prepare_splits(
        self,
        splits: Mapping[str, pl.DataFrame],
        name: str,
        *,
        cache_dir: str | Path | None = None,
    ) -> PreparedData:
        """Your own logs: grow the vocabularies on ``splits["train"]`` (raw frames of the
        run's schema, as ``adrank prepare`` reads them) and encode every split with the grown
        processor, written under the prepared-data cache as ``NAME-from-<run digest>``."""
        if "train" not in splits:
            raise ValueError(f"a warm start needs a 'train' split; got {sorted(splits)}")
        self.chunk += 1
        self.step = self.growth.observe(self.processor, splits["train"], self.chunk)
        out = Path(cache_dir) if cache_dir else default_cache_dir()
        digest = artifact_digest(self.run_dir, self.artifact.manifest)
        return prepare_frames(
            self.processor.schema,
            dict(splits),
            out / f"{name}-from-{digest}",
            extra_meta={"dataset": name, "init_from": str(self.run_dir)},
            fitted=self.processor,
        )

    def feature_map(self, feature_map: FeatureMap) -> FeatureMap:
        """``feature_map`` (the grown processor's) with table sizes never below the run's."""
        old = {
            f.table: f.vocab_size for f in self.artifact.feature_map.fields if f.kind != "numeric"
        }
        capacity = {t: max(n, old.get(t, 0)) for t, n in self.growth.capacity().items()}
        self.growth.capacity_ = capacity
        return capacity_feature_map(feature_map, capacity)

    def load_into(self, model: nn.Module) -> None:
        """Copy the run's weights into ``model`` (built on :meth:`feature_map`); fresh rows
        for the ids admitted by :meth:`prepare`."""
        self._maps = grow_model(self.artifact.model, model)
        for table, ids in self.step.admitted.items():
            reset_rows(model, None, table, torch.as_tensor(ids))

    def optimizer(self, model: nn.Module, learning_rate: float) -> SparseDenseAdam:
        """Adam (dense) + RowAdam (tables) on ``model`` with the run's optimizer state moved
        to the grown tables (call after :meth:`load_into`)."""
        device = next(model.parameters()).device
        optimizer = build_optimizer(
            model, learning_rate, device, sparse_embeddings=True, row_steps=True
        )
        assert isinstance(optimizer, SparseDenseAdam)
        params = dict(model.named_parameters())
        tables = set(_table_names(model))
        if optimizer.dense is not None:
            dense_names = [
                n for n, p in model.named_parameters() if p.requires_grad and n not in tables
            ]
            state = optimizer.dense.state_dict()
            state["state"] = {
                i: self.optimizer_state[n]
                for i, n in enumerate(dense_names)
                if n in self.optimizer_state
            }
            optimizer.dense.load_state_dict(state)
        for name in tables:
            st = self.optimizer_state.get(name)
            if st is None:
                continue
            src, dst = self._maps.get(name, (None, None))
            p = params[name]
            optimizer.sparse.state[p] = {
                k: v.to(device) for k, v in grow_row_state(st, p.shape[0], src, dst).items()
            }
        for table, ids in self.step.admitted.items():
            reset_rows(model, optimizer, table, torch.as_tensor(ids), weights=False)
        return optimizer

    def save(self, run_dir: str | Path) -> None:
        """Write the growth state into the new run directory (for the next warm start)."""
        self.growth.save(Path(run_dir) / GROWTH_FILE)
